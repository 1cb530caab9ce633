//go:build tools

// Package deps pins the modules gemu is built from so concurrent work keeps one go.mod.
// It is never compiled (build tag "tools").
package deps

import (
	_ "github.com/klauspost/compress/flate"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/u-root/u-root/pkg/cpio"
	_ "github.com/urfave/cli/v2"
	_ "golang.org/x/arch/arm64/arm64asm"
	_ "golang.org/x/arch/x86/x86asm"
	_ "golang.org/x/sys/unix"
)
