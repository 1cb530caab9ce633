package armtest

import (
	"bytes"
	"testing"
	"time"

	"gemu/hw/memory"
	arm "gemu/target-arm"
)

// TestPoweredOffCPUDoesNotRun checks that a vCPU that was never reset or started (a
// secondary CPU before PSCI CPU_ON) executes nothing while its Run loop waits.
func TestPoweredOffCPUDoesNotRun(t *testing.T) {
	ram := memory.New()
	if _, err := ram.Add("ram", 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	var trace bytes.Buffer
	cpu := arm.New(arm.Config{ID: 1, RAM: ram, Trace: &trace, TraceFlags: arm.TraceExec | arm.TraceInt | arm.TraceInAsm})
	defer cpu.Close()
	if cpu.PoweredOn() {
		t.Fatal("a new vCPU reports powered on")
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- cpu.Run(stop) }()
	time.Sleep(50 * time.Millisecond) // give a wrongly running vCPU time to execute
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if trace.Len() != 0 {
		t.Errorf("powered-off vCPU executed:\n%.500s", trace.String())
	}
}
