package armtest

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// cpuTime returns this process's user+system CPU time. Guest MIPS are computed from CPU
// time rather than wall time because the test machine is shared.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopIters and loopInsns describe the benchmark loop: loopInsns instructions per
// iteration (integer ALU, a load, a store and a taken branch: a typical kernel mix).
const (
	loopIters = 20_000_000
	loopInsns = 7
)

var loopBody = fmt.Sprintf(`
	adrp x2, scratch
	add x2, x2, :lo12:scratch
	ldr x1, =%d
1:	add x0, x0, x1
	eor x3, x0, x1, lsl #3
	ldr x4, [x2, #8]
	add x5, x4, x3
	str x5, [x2, #16]
	subs x1, x1, #1
	b.ne 1b
	b 2f
	.ltorg
2:
`, loopIters)

// BenchmarkLoopMIPS reports gemu's guest MIPS (per CPU second) on a straight integer
// loop, and qemu-aarch64's on the same program for reference.
func BenchmarkLoopMIPS(b *testing.B) {
	bin := Build(b, b.TempDir(), loopBody)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := cpuTime()
		if _, err := runGemu(bin, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(loopIters*loopInsns)/(cpuTime()-start).Seconds()/1e6, "gemu-MIPS")
	}
	b.StopTimer()
	if q, err := exec.LookPath("qemu-aarch64"); err == nil {
		cmd := exec.Command(q, bin)
		if err := cmd.Run(); err == nil {
			t := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			b.ReportMetric(float64(loopIters*loopInsns)/t.Seconds()/1e6, "qemu-MIPS")
		}
	}
}
