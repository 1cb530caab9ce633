package qemuopts

import (
	"errors"
	"math/bits"
	"strconv"
	"strings"
)

var (
	errSyntax = errors.New("invalid size")
	errRange  = errors.New("out of range")
)

// suffixShift maps QEMU's size suffixes (case-insensitive) to a power of two.
func suffixShift(c byte) (uint, bool) {
	switch c | 0x20 {
	case 'b':
		return 0, true
	case 'k':
		return 10, true
	case 'm':
		return 20, true
	case 'g':
		return 30, true
	case 't':
		return 40, true
	case 'p':
		return 50, true
	case 'e':
		return 60, true
	}
	return 0, false
}

// ParseSize parses a size as QEMU's qemu_strtosz does: a decimal number with an
// optional fraction and an optional suffix B, K, M, G, T, P or E (powers of 1024, any
// case); no suffix means bytes, and a fraction needs a suffix other than B (1.5G, not
// 1.5). Hexadecimal (0x1000) is accepted without a suffix; QEMU deprecates hex with a
// suffix and gemu refuses it. The result is rounded to the nearest byte, halves up.
func ParseSize(s string) (uint64, error) { return parseSize(s, 0) }

// parseSize is ParseSize with defShift applied when there is no suffix.
func parseSize(s string, defShift uint) (uint64, error) {
	if s == "" {
		return 0, errSyntax
	}
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		if defShift != 0 {
			return 0, errSyntax
		}
		n, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return 0, errRange
			}
			return 0, errSyntax
		}
		return n, nil
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errSyntax
	}
	val, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		return 0, errRange
	}
	var frac uint64 // 0.64 fixed point
	hasFrac := false
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return 0, errSyntax
		}
		f, err := strconv.ParseFloat("0"+s[i:j], 64)
		if err != nil {
			return 0, errSyntax
		}
		frac = uint64(f * 0x1p64)
		if f >= 1 { // only when rounding reached 1.0
			frac = ^uint64(0)
		}
		hasFrac = frac != 0
		i = j
	}
	shift := defShift
	if i < len(s) {
		sh, ok := suffixShift(s[i])
		if !ok || i+1 != len(s) {
			return 0, errSyntax
		}
		shift = sh
	}
	if shift == 0 {
		if hasFrac {
			return 0, errSyntax // fractions of a byte
		}
		return val, nil
	}
	// 64.64 fixed point times 2^shift, rounded.
	hi, lo := bits.Mul64(val, 1<<shift)
	fhi, flo := bits.Mul64(frac, 1<<shift)
	lo, c := bits.Add64(lo, fhi, 0)
	hi += c
	lo, c = bits.Add64(lo, flo>>63, 0)
	hi += c
	if hi != 0 {
		return 0, errRange
	}
	return lo, nil
}

// parseUint parses an unsigned number as QemuOpts' number type: decimal, 0x hex or
// leading-0 octal.
func parseUint(s string) (uint64, error) {
	if s == "" || s[0] == '+' || s[0] == '-' || strings.ContainsRune(s, '_') {
		return 0, errSyntax
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, errRange
		}
		return 0, errSyntax
	}
	return n, nil
}

// Mem is a parsed -m option.
type Mem struct {
	Size uint64 // bytes; 0 when -m gave none (the board's default applies)
}

// ParseMem parses -m [size=]SIZE as QEMU does: a number without a suffix is MiB
// (legacy -m format), so "-m 1.5" is refused as QEMU refuses it while "-m 1.5G" is
// 1536 MiB. Memory hotplug (slots=, maxmem=) is refused. Errors are QEMU's, one line.
func ParseMem(spec string) (Mem, error) {
	o, err := ParseOpt("m", spec, "size")
	if err != nil {
		return Mem{}, err
	}
	if o.Help {
		return Mem{}, o.errorf("-m options: size=SIZE (slots= and maxmem= are not supported)")
	}
	var m Mem
	if v, ok := o.Get("size"); ok {
		shift := uint(0)
		if v != "" && v[len(v)-1] >= '0' && v[len(v)-1] <= '9' {
			shift = 20 // QEMU: "Fix up legacy suffix-less format"
		}
		if strings.ContainsRune(v, '.') && shift != 0 {
			return Mem{}, o.sizeError("size", v, errSyntax)
		}
		m.Size, err = parseSize(v, shift)
		if err != nil {
			return Mem{}, o.sizeError("size", v, err)
		}
	}
	for _, k := range []string{"slots", "maxmem"} {
		if o.Has(k) {
			return Mem{}, o.errorf("memory hotplug (%s=) is not supported", k)
		}
	}
	if err := o.Check(); err != nil {
		return Mem{}, err
	}
	return m, nil
}
