package x86

// callNative calls host machine code at fn (native_amd64.s). Only the differential
// tests use it: they run an instruction sequence on this host's CPU, inside a
// generated prologue and epilogue that load and store the register file, to compare
// with the translator.
//
//go:noescape
func callNative(fn uintptr)
