package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"gemu/cmd/internal/qemuopts"
	"gemu/hw/fwcfg"
	"gemu/machine/virt"
)

// maxFwCfgFile bounds a -fw_cfg file (fw_cfg sizes are 32 bits; the data stays in host
// memory for the guest to read).
const maxFwCfgFile = 256 << 20

// fwCfg applies one -fw_cfg [name=]NAME,file=FILE|string=STR with QEMU's checks and
// messages (softmmu/vl.c parse_fw_cfg).
func (o *options) fwCfg(spec string) error {
	op, err := qemuopts.ParseOpt("fw_cfg", spec, "name")
	if err != nil {
		return err
	}
	if err := op.Check("name", "file", "string", "gen_id"); err != nil {
		return err
	}
	name, _ := op.Get("name")
	file, _ := op.Get("file")
	str, hasStr := op.Get("string")
	genID, _ := op.Get("gen_id")
	given := 0
	for _, v := range []string{file, str, genID} {
		if v != "" {
			given++
		}
	}
	if name == "" || given != 1 {
		return fmt.Errorf("-fw_cfg %s: name, plus exactly one of file, string and gen_id, are needed", spec)
	}
	if len(name) > fwcfg.MaxName {
		return fmt.Errorf("-fw_cfg %s: name too long (max. %d char)", spec, fwcfg.MaxName)
	}
	if genID != "" {
		return fmt.Errorf("-fw_cfg %s: gen_id (VM generation ID) is not supported", spec)
	}
	if !strings.HasPrefix(name, "opt/") {
		o.warnings = append(o.warnings, fmt.Sprintf("-fw_cfg %s: externally provided fw_cfg item names should be prefixed with \"opt/\"", spec))
	}
	for _, f := range o.cfg.FwCfg {
		if f.Name == name {
			return fmt.Errorf("-fw_cfg %s: duplicate fw_cfg file name: %s", spec, name)
		}
	}
	var data []byte
	if hasStr && str != "" {
		data = []byte(str) // no NUL, as QEMU
	} else {
		st, err := os.Stat(file)
		if err == nil && st.Size() > maxFwCfgFile {
			err = fmt.Errorf("%d bytes, over the %d MiB gemu takes", st.Size(), maxFwCfgFile>>20)
		}
		if err == nil {
			data, err = os.ReadFile(file)
		}
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		if err != nil {
			return fmt.Errorf("-fw_cfg %s: can't load %s: %v", spec, file, err)
		}
	}
	o.cfg.FwCfg = append(o.cfg.FwCfg, virt.FwCfgFile{Name: name, Data: data})
	return nil
}

// msgTimestamp is -msg timestamp=on: messages start with the UTC time, as QEMU's.
var msgTimestamp bool

func msgPrefix() string {
	if !msgTimestamp {
		return ""
	}
	return time.Now().UTC().Format("2006-01-02T15:04:05.000000Z ")
}

// rtc applies -rtc [base=utc|localtime|DATE][,clock=host|rt|vm][,driftfix=none|slew] as
// QEMU's configure_rtc does: the PL031 starts at host UTC, local time or DATE (UTC).
// clock=vm and clock=rt run with the host clock here (gemu does not pause a guest).
func (o *options) rtc(spec string) error {
	op, err := qemuopts.ParseOpt("rtc", spec, "")
	if err != nil {
		return err
	}
	if err := op.Check("base", "clock", "driftfix"); err != nil {
		return err
	}
	for key, allowed := range map[string][]string{"clock": {"host", "rt", "vm"}, "driftfix": {"none", "slew"}} {
		if v, ok := op.Get(key); ok && !slices.Contains(allowed, v) {
			return fmt.Errorf("invalid option value '%s'", v)
		}
	}
	base, _ := op.Get("base")
	switch base {
	case "", "utc":
		o.cfg.RTCBase = 0
	case "localtime":
		_, off := time.Now().Zone()
		o.cfg.RTCBase = time.Duration(off) * time.Second
	default:
		var start time.Time
		for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02"} {
			if start, err = time.ParseInLocation(layout, base, time.UTC); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("-rtc %s: invalid datetime format (valid formats: '2006-06-17T16:01:21' or '2006-06-17')", spec)
		}
		o.cfg.RTCBase = time.Until(start)
	}
	return nil
}
