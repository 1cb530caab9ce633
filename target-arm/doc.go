// Package arm owns gemu's AArch64 CPU for TCG: an ARMv8.0 vCPU (EL0 and EL1, AArch64
// only) in the CPU models of cpumodels.go (Cortex-A57 by default; max and neoverse-n1
// add the ARMv8.1 LSE atomics of lse.go, LDAPR, RDM, DotProd and PAN/UAO of pan.go;
// max also RNDR, SHA512, SHA3, SM3, SM4 and FP16 arithmetic: isaext.go) with its
// architectural state, the A64 decoder/frontend that turns
// guest instructions into tcg backend code, the stage-1 MMU and softmmu slow paths,
// exceptions and the vector table, system registers, the exclusive monitor, the
// generic timer, the self-hosted debug architecture (debug.go) and PMUv3 (pmu.go).
// FP/AdvSIMD data processing lives in fpsimd*.go (decodeFPSIMD). The run loop is
// tcg's (tcg.VCPU.Run); this package implements its hooks (cpu.go: handleExit,
// checkInterrupts; translate.go: fetch, translateBlock). The guest-wide translator
// state is a tcg.Engine (arm.Engine), passed in Config.Engine by the board; without
// one, vCPUs sharing a RAM share an engine New creates.
//
// It must not know about devices or machines: physical accesses that miss RAM go to the
// machine's MMIO bus, the GIC CPU interface and IMPLEMENTATION DEFINED system registers
// go to Config.SysRegs, HVC/SMC (PSCI) to Config.HVC/SMC, timer outputs to
// Config.TimerIRQ, the PMU overflow interrupt to Config.PMUIRQ.
package arm
