package block

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize parses a size the way qemu-img does: a decimal number with an optional
// fractional part and an optional binary suffix (B, K, M, G, T, P, E; case-insensitive,
// 1K = 1024). defUnit is the multiplier used when no suffix is given (1 for bytes).
// Fractions are only meaningful with a suffix and are rounded down to whole bytes.
func ParseSize(s string, defUnit int64) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("invalid size '%s'", s)
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, suf := t[:i], strings.TrimSpace(t[i:])
	if num == "" || strings.Count(num, ".") > 1 {
		return 0, fmt.Errorf("invalid size '%s'", s)
	}
	mult := defUnit
	switch strings.ToUpper(suf) {
	case "":
	case "B":
		mult = 1
	case "K", "KB", "KIB":
		mult = 1 << 10
	case "M", "MB", "MIB":
		mult = 1 << 20
	case "G", "GB", "GIB":
		mult = 1 << 30
	case "T", "TB", "TIB":
		mult = 1 << 40
	case "P", "PB", "PIB":
		mult = 1 << 50
	case "E", "EB", "EIB":
		mult = 1 << 60
	default:
		return 0, fmt.Errorf("invalid size '%s'", s)
	}
	if !strings.Contains(num, ".") {
		v, err := strconv.ParseUint(num, 10, 63)
		if err != nil || (mult > 1 && v > uint64(math.MaxInt64)/uint64(mult)) {
			return 0, fmt.Errorf("size '%s' is too large", s)
		}
		return int64(v) * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size '%s'", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size '%s' is too large", s)
	}
	return int64(v), nil
}

// SizeToStr renders a byte count like qemu's size_to_str ("512 B", "1.5 GiB", "0.977 KiB"):
// three significant digits in the largest binary unit that keeps the value under 1000.
func SizeToStr(v int64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, exp := math.Frexp(float64(v) / (1000.0 / 1024.0))
	i := (exp - 1) / 10
	if i < 0 {
		i = 0
	}
	if i >= len(suffixes) {
		i = len(suffixes) - 1
	}
	div := float64(uint64(1) << (uint(i) * 10))
	return fmt.Sprintf("%.3g %sB", float64(v)/div, suffixes[i])
}
