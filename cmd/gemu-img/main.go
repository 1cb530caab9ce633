// Command gemu-img is a thin main; see ARCHITECTURE.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "gemu-img: not implemented yet")
	os.Exit(1)
}
