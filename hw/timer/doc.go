// Package timer owns the PC's timer devices of a userspace chipset (under KVM the
// kernel has its own PIT, and the HPET is not offered): the 8254 PIT at ports
// 0x40-0x43 with port 0x61 (channel 2's gate and output, the speaker), and the HPET at
// 0xfed00000 as QEMU's pc has it (3 timers, 100 MHz counter, legacy replacement
// route); and the Clock they and the local APIC timers run on (the host's monotonic
// clock, or a manual one for tests). The ACPI PM timer is hw/acpi's.
//
// Timers are computed from the clock when read; a callback (time.AfterFunc) is armed
// only for the next interrupt, never per tick. The package must not know about
// accelerators, boards or the interrupt controllers behind its bus.IRQ lines.
package timer
