package main

import (
	"fmt"
	"io"
	"strings"

	"gemu/block"
)

// optionsHelper is a format that can list its -o options as qemu-img prints them.
type optionsHelper interface{ OptionsHelp() string }

// wantsOptionsHelp reports whether one of the -o strings asks for help ("help" or
// "?" as an option of its own).
func wantsOptionsHelp(list []string) bool {
	for _, s := range list {
		for _, p := range strings.Split(s, ",") {
			if p == "help" || p == "?" {
				return true
			}
		}
	}
	return false
}

// printOptionsHelp prints the `-o help` text of format to w, as qemu-img create does.
// Formats that do not list their options keep the older one-line refusal.
func printOptionsHelp(w io.Writer, format string) error {
	f, err := block.Lookup(format)
	if err != nil {
		return fail("%s", err)
	}
	h, ok := f.(optionsHelper)
	if !ok {
		return fail("Option help is not supported; see the qemu-img documentation for the format's options")
	}
	fmt.Fprint(w, h.OptionsHelp())
	return nil
}
