package main

import (
	"fmt"
	"os"
	"syscall"
)

// statKey identifies a file by device and inode so backing loops are caught even
// when spelled differently.
func statKey(fi os.FileInfo, fallback string) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	}
	return fallback
}
