package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// keyRank orders JSON object keys the way qemu-img 7.2 prints them (its QDict hash
// order, stable for a given key set); unknown keys follow, alphabetically.
var keyRank = func() map[string]int {
	order := []string{
		"image-end-offset", "compressed-clusters", "total-clusters", "corruptions", "corruptions-fixed",
		"check-errors", "leaks", "leaks-fixed", "allocated-clusters",
		"backing-filename-format", "snapshots", "icount", "vm-clock-nsec", "flags", "name", "granularity", "date-sec",
		"date-nsec", "vm-clock-sec", "id", "vm-state-size", "compressed", "virtual-size", "filename",
		"cluster-size", "format", "actual-size", "encrypted", "format-specific", "type", "data",
		"compat", "compression-type", "lazy-refcounts", "bitmaps", "required", "refcount-bits", "data-file", "data-file-raw",
		"corrupt", "extended-l2", "bitmaps-list", "cid", "parent-cid", "create-type", "extents", "full-backing-filename", "backing-filename",
		"dirty-flag", "fully-allocated", "fragmented-clusters",
	}
	m := map[string]int{}
	for i, k := range order {
		m[k] = i
	}
	return m
}()

// ordKV is an ordered JSON object.
type ordKV struct {
	keys []string
	vals map[string]any
}

func obj() *ordKV { return &ordKV{vals: map[string]any{}} }

func (o *ordKV) set(k string, v any) *ordKV {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
	return o
}

func sortKeys(keys []string) {
	sort.SliceStable(keys, func(i, j int) bool {
		ri, oki := keyRank[keys[i]]
		rj, okj := keyRank[keys[j]]
		switch {
		case oki && okj:
			return ri < rj
		case oki != okj:
			return oki
		}
		return keys[i] < keys[j]
	})
}

// normalize turns any value (maps, structs, slices from drivers) into
// map[string]any / []any / scalars via encoding/json.
func normalize(v any) any {
	switch v.(type) {
	case *ordKV, nil, string, bool, int, int64, float64, json.Number, []any, map[string]any:
		return v // containers are walked element by element by the writers
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out any
	if d.Decode(&out) != nil {
		return fmt.Sprint(v)
	}
	return out
}

// writeJSON renders v as qemu-img does: 4-space indentation, "key": value.
func writeJSON(buf *bytes.Buffer, v any, indent int) {
	pad := strings.Repeat(" ", indent)
	switch x := normalize(v).(type) {
	case *ordKV:
		keys := append([]string(nil), x.keys...)
		sortKeys(keys)
		writeObject(buf, keys, func(k string) any { return x.vals[k] }, indent)
	case map[string]any:
		var keys []string
		for k := range x {
			keys = append(keys, k)
		}
		sortKeys(keys)
		writeObject(buf, keys, func(k string) any { return x[k] }, indent)
	case []any:
		if len(x) == 0 {
			buf.WriteString("[\n" + pad + "]")
			return
		}
		buf.WriteString("[\n")
		for i, e := range x {
			buf.WriteString(pad + "    ")
			writeJSON(buf, e, indent+4)
			if i < len(x)-1 {
				buf.WriteString(",")
			}
			buf.WriteString("\n")
		}
		buf.WriteString(pad + "]")
	case string:
		b, _ := json.Marshal(x)
		buf.Write(b)
	case bool:
		buf.WriteString(strconv.FormatBool(x))
	case int:
		buf.WriteString(strconv.Itoa(x))
	case int64:
		buf.WriteString(strconv.FormatInt(x, 10))
	case json.Number:
		buf.WriteString(x.String())
	case float64:
		buf.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case nil:
		buf.WriteString("null")
	default:
		b, _ := json.Marshal(x)
		buf.Write(b)
	}
}

func writeObject(buf *bytes.Buffer, keys []string, get func(string) any, indent int) {
	pad := strings.Repeat(" ", indent)
	if len(keys) == 0 {
		buf.WriteString("{\n" + pad + "}")
		return
	}
	buf.WriteString("{\n")
	for i, k := range keys {
		b, _ := json.Marshal(k)
		buf.WriteString(pad + "    ")
		buf.Write(b)
		buf.WriteString(": ")
		writeJSON(buf, get(k), indent+4)
		if i < len(keys)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString(pad + "}")
}

func jsonString(v any) string {
	var buf bytes.Buffer
	writeJSON(&buf, v, 0)
	buf.WriteString("\n")
	return buf.String()
}

// humanDump prints a format-specific dictionary as qemu-img info's human output does:
// keys with '-' turned into spaces, nested dictionaries and lists indented by 4.
func humanDump(buf *bytes.Buffer, v any, indent int) {
	pad := strings.Repeat(" ", indent)
	scalar := func(x any) (string, bool) {
		switch y := x.(type) {
		case string:
			return y, true
		case bool:
			return strconv.FormatBool(y), true
		case json.Number:
			return y.String(), true
		case float64:
			return strconv.FormatFloat(y, 'g', -1, 64), true
		case int64:
			return strconv.FormatInt(y, 10), true
		case int:
			return strconv.Itoa(y), true
		case nil:
			return "null", true
		}
		return "", false
	}
	switch x := normalize(v).(type) {
	case map[string]any:
		var keys []string
		for k := range x {
			keys = append(keys, k)
		}
		sortKeys(keys)
		for _, k := range keys {
			name := strings.ReplaceAll(k, "-", " ")
			if s, ok := scalar(x[k]); ok {
				fmt.Fprintf(buf, "%s%s: %s\n", pad, name, s)
			} else {
				fmt.Fprintf(buf, "%s%s:\n", pad, name)
				humanDump(buf, x[k], indent+4)
			}
		}
	case []any:
		for i, e := range x {
			if s, ok := scalar(e); ok {
				fmt.Fprintf(buf, "%s[%d]: %s\n", pad, i, s)
			} else {
				fmt.Fprintf(buf, "%s[%d]:\n", pad, i)
				humanDump(buf, e, indent+4)
			}
		}
	}
}
