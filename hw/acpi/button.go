package acpi

// pm1StsPwrBtn is PM1_STS.PWRBTN_STS and PM1_EN.PWRBTN_EN (ACPI 6.4 §4.8.3.1).
const pm1StsPwrBtn = 1 << 8

// PowerButton presses the fixed-feature power button (QEMU's system_powerdown on a
// PC): PWRBTN_STS is set and the SCI raised if the guest enabled PWRBTN_EN. The guest's
// ACPI driver sees the event and decides (Linux: a KEY_POWER input event, which
// systemd-logind or acpid turn into a shutdown). It reports whether the guest had
// enabled the button's interrupt. Safe from any goroutine.
func (p *PM) PowerButton() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pm1Sts |= pm1StsPwrBtn
	p.updateSCILocked()
	return p.pm1En&pm1StsPwrBtn != 0
}
