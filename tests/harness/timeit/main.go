// Command timeit runs a command, passes its output through, and prints one line
//
//	TIMEIT name=NAME marker=SECONDS total=SECONDS maxrss_kib=N own_kib=N exit=N
//
// where marker is the wall time until a line containing -marker first appeared on the
// command's stdout (-1 if never), maxrss_kib the child's peak resident set from wait4,
// and own_kib the peak resident set outside guest RAM: sampled from /proc/PID/smaps,
// leaving out mappings at least -guest-mib large (the VMM's guest RAM). It is a static helper the KVM benchmark copies into the harness's outer guest,
// where busybox has no sub-second timer.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

func main() {
	name := flag.String("name", "run", "label for the result line")
	marker := flag.String("marker", "", "stdout text whose first appearance is timed")
	guestMiB := flag.Int64("guest-mib", 0, "mappings this large or larger are guest RAM (0: no own_kib)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "timeit: no command")
		os.Exit(2)
	}
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "timeit:", err)
		os.Exit(2)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "timeit:", err)
		os.Exit(2)
	}
	markAt := -1.0
	var own int64
	done := make(chan struct{})
	if *guestMiB > 0 {
		go func() {
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if v := ownRSS(cmd.Process.Pid, *guestMiB<<20); v > own {
						own = v
					}
				}
			}
		}()
	}
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if markAt < 0 && *marker != "" && strings.Contains(line, *marker) {
			markAt = time.Since(start).Seconds()
		}
		fmt.Println(line)
	}
	err = cmd.Wait()
	close(done)
	total := time.Since(start).Seconds()
	code := 0
	if err != nil {
		code = 1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	fmt.Printf("TIMEIT name=%s marker=%.3f total=%.3f maxrss_kib=%d own_kib=%d exit=%d\n", *name, markAt, total, rss, own, code)
}

// ownRSS sums Rss (KiB) over the mappings of pid smaller than guest bytes.
func ownRSS(pid int, guest int64) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	var sum int64
	big := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			var lo, hi int64
			if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err == nil {
				big = hi-lo >= guest
			}
			continue
		}
		if strings.HasPrefix(line, "Rss:") && !big {
			var kb int64
			fmt.Sscanf(strings.TrimPrefix(line, "Rss:"), "%d", &kb)
			sum += kb
		}
	}
	return sum
}
