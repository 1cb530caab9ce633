// Command memwriter is the guest side of the live-migration tests (tests/migrate): a
// static linux/arm64 program the test puts in the guest's initramfs. It fills a
// buffer of -mib MiB with a pattern, page by page, and then rewrites it round after
// round; before rewriting a page it checks that the page still holds what it last
// wrote there (a generation number per page, kept in guest memory too). A page a
// migration lost or sent stale shows as a mismatch on the destination. It prints
//
//	MEMW READY             after the first round (every page written, none zero)
//	MEMW ROUND n SUM s     after each round: s, the checksum of everything written
//	MEMW BAD page p ...    on a mismatch, then exits 1
//
// -pause sleeps that long after each MiB, bounding the rate the guest dirties memory.
package main

import (
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"
)

func pattern(page, gen, w uint64) uint64 {
	return (page<<32|gen)*0x9e3779b97f4a7c15 + w*0x2545f4914f6cdd1d + 1
}

func main() {
	mib := flag.Int("mib", 64, "MiB of memory to write")
	pause := flag.Duration("pause", 0, "sleep after each MiB written")
	rounds := flag.Int("rounds", 1<<30, "rounds to run")
	flag.Parse()
	const pageWords = 4096 / 8
	// Outside the Go heap: the collector neither scans nor moves it.
	mem, err := syscall.Mmap(-1, 0, *mib<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		fmt.Println("MEMW mmap:", err)
		os.Exit(1)
	}
	words := unsafeWords(mem)
	pages := uint64(len(words) / pageWords)
	gen := make([]uint64, pages)
	var sum uint64
	for r := 0; r < *rounds; r++ {
		for p := uint64(0); p < pages; p++ {
			pw := words[p*pageWords : (p+1)*pageWords]
			if r > 0 {
				for w := range pw {
					if pw[w] != pattern(p, gen[p], uint64(w)) {
						fmt.Printf("MEMW BAD page %d word %d: %#x, want %#x (generation %d, round %d)\n",
							p, w, pw[w], pattern(p, gen[p], uint64(w)), gen[p], r)
						os.Exit(1)
					}
				}
			}
			gen[p]++
			for w := range pw {
				v := pattern(p, gen[p], uint64(w))
				pw[w] = v
				sum += v
			}
			if *pause > 0 && (p+1)%256 == 0 {
				time.Sleep(*pause)
			}
		}
		if r == 0 {
			fmt.Println("MEMW READY")
		}
		fmt.Printf("MEMW ROUND %d SUM %#x\n", r, sum)
	}
}
