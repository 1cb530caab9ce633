package block

import (
	"fmt"
	"sync"
)

// BenchOptions are qemu-img bench's parameters.
type BenchOptions struct {
	Count         int   // -c: requests
	Depth         int   // -d: requests in flight
	BufSize       int64 // -s: bytes per request
	Offset        int64 // -o: first offset
	Step          int64 // -S: distance between requests (0: BufSize)
	Write         bool  // -w
	Pattern       byte  // --pattern: byte written
	FlushInterval int   // --flush-interval: flush every N writes (0: never)
}

// Bench issues Count requests of BufSize bytes, Depth at a time, starting at Offset and
// advancing by Step, wrapping to Offset when a request would pass the image end.
func Bench(d Driver, o BenchOptions) error {
	if o.Count <= 0 || o.Depth <= 0 || o.BufSize <= 0 {
		return fmt.Errorf("invalid bench parameters")
	}
	if o.BufSize > 1<<30 {
		return fmt.Errorf("buffer size too large")
	}
	step := o.Step
	if step == 0 {
		step = o.BufSize
	}
	size := d.Size()
	if o.Offset+o.BufSize > size {
		return fmt.Errorf("offset + buffer size exceeds image size")
	}
	offsets := make(chan int64, o.Depth)
	errs := make(chan error, o.Depth)
	var wg sync.WaitGroup
	for range o.Depth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("internal error: %v", r)
					for range offsets {
					}
				}
				errs <- err
			}()
			buf := make([]byte, o.BufSize)
			if o.Write {
				for i := range buf {
					buf[i] = o.Pattern
				}
			}
			for off := range offsets {
				if err != nil {
					continue
				}
				if o.Write {
					_, err = d.WriteAt(buf, off)
				} else {
					err = readFull(d, buf, off)
				}
			}
		}()
	}
	off := o.Offset
	writes := 0
	var ferr error
	for i := 0; i < o.Count; i++ {
		offsets <- off
		off += step
		if off+o.BufSize > size {
			off = o.Offset
		}
		if o.Write && o.FlushInterval > 0 {
			writes++
			if writes%o.FlushInterval == 0 {
				if err := d.Flush(); err != nil && ferr == nil {
					ferr = err
				}
			}
		}
	}
	close(offsets)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if ferr != nil {
		return ferr
	}
	if o.Write {
		return d.Flush()
	}
	return nil
}
