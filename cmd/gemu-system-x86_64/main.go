// Command gemu-system-x86_64 is a thin main; see ARCHITECTURE.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "gemu-system-x86_64: not implemented yet")
	os.Exit(1)
}
