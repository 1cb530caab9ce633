package monitor

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Run states of migration, as query-status names them.
const (
	Inmigrate     Status = "inmigrate"      // -incoming: waiting for or loading a stream
	FinishMigrate Status = "finish-migrate" // the source, paused, writing the state
	Postmigrate   Status = "postmigrate"    // the source after a completed migration
)

// Migration states (query-migrate's "status" and the MIGRATION event's).
const (
	MigNone       = "none"
	MigSetup      = "setup"
	MigActive     = "active"
	MigCompleted  = "completed"
	MigFailed     = "failed"
	MigCancelling = "cancelling"
	MigCancelled  = "cancelled"
)

// MigrationInfo is the state of the last outgoing (or incoming) migration.
type MigrationInfo struct {
	Status    string // "" or MigNone: none yet
	Setup     time.Duration
	Total     time.Duration // so far, while active
	Downtime  time.Duration // the guest was paused this long (non-live: the whole save)
	RAMTotal  uint64        // guest RAM bytes
	Sent      uint64        // stream bytes so far
	Normal    uint64        // non-zero pages sent
	Duplicate uint64        // zero pages not sent
	Error     string        // when failed
	// Live migration (zero otherwise): the dirty-log syncs so far, the dirty RAM not
	// yet sent, pages dirtied per second, the bandwidth measured, the downtime expected
	// at it, the vCPU throttle in percent (auto-converge).
	Syncs            int
	Remaining        uint64
	DirtyRate        uint64
	Bandwidth        float64 // bytes per second
	ExpectedDowntime time.Duration
	Throttle         int
	Live             bool
}

// MigrationParams are the migration capabilities and parameters a migration runs with
// (migrate-set-capabilities, migrate-set-parameters), for the Migrator.
type MigrationParams struct {
	AutoConverge                                                     bool
	MaxBandwidth                                                     uint64 // bytes per second
	DowntimeLimit                                                    time.Duration
	ThrottleTrigger, ThrottleInitial, ThrottleIncrement, MaxThrottle int
}

// MigrationParams returns the capabilities and parameters set now.
func (s *Server) MigrationParams() MigrationParams {
	s.mig.mu.Lock()
	defer s.mig.mu.Unlock()
	v := s.mig.vals
	return MigrationParams{AutoConverge: s.mig.caps["auto-converge"], MaxBandwidth: uint64(v["max-bandwidth"]),
		DowntimeLimit:   time.Duration(v["downtime-limit"]) * time.Millisecond,
		ThrottleTrigger: int(v["throttle-trigger-threshold"]), ThrottleInitial: int(v["cpu-throttle-initial"]),
		ThrottleIncrement: int(v["cpu-throttle-increment"]), MaxThrottle: int(v["max-cpu-throttle"])}
}

// EmitMigrationPass sends QEMU's MIGRATION_PASS event (one per dirty-log sync) if the
// events capability is on.
func (s *Server) EmitMigrationPass(pass int) {
	if s.MigrationEvents() {
		s.Emit("MIGRATION_PASS", map[string]int{"pass": pass})
	}
}

// Migrator is the optional migration side of a Machine (snapshots to files, migration
// over sockets and commands). URIs are QEMU's: file:PATH, exec:CMD, unix:PATH,
// tcp:HOST:PORT.
type Migrator interface {
	// Migrate starts sending the machine's state to uri and returns; an unusable URI
	// or a migration already running is an error. Progress and the end are reported
	// through MigrationInfo and the MIGRATION event.
	Migrate(uri string) error
	MigrateCancel() error
	// MigrateIncoming starts receiving from uri (after -incoming defer).
	MigrateIncoming(uri string) error
	MigrationInfo() MigrationInfo
}

// migrateCaps are QEMU 7.2's migration capabilities, in its order; gemu implements
// "events" (MIGRATION and MIGRATION_PASS events are sent only with it on, as QEMU's)
// and "auto-converge" (settableCaps) and refuses to turn the others on.
var migrateCaps = []string{"xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
	"postcopy-ram", "x-colo", "release-ram", "block", "return-path", "pause-before-switchover", "multifd",
	"dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared", "validate-uuid",
	"background-snapshot", "zero-copy-send", "postcopy-preempt"}

// settableCaps are the capabilities gemu implements.
var settableCaps = map[string]bool{"events": true, "auto-converge": true}

// migrateParams are the capabilities set and the migrate-set-parameters values gemu
// keeps and reports (QEMU 7.2's defaults). A live migration runs with max-bandwidth,
// downtime-limit and the throttle ones (MigrationParams); the others are reported only.
type migrateParams struct {
	mu     sync.Mutex
	events bool
	caps   map[string]bool
	vals   map[string]int64
}

var paramDefaults = map[string]int64{"max-bandwidth": 134217728, "downtime-limit": 300, "announce-initial": 50,
	"announce-max": 550, "announce-rounds": 5, "announce-step": 100, "throttle-trigger-threshold": 50,
	"cpu-throttle-initial": 20, "cpu-throttle-increment": 10, "max-postcopy-bandwidth": 0,
	"max-cpu-throttle": 99, "multifd-channels": 2, "xbzrle-cache-size": 67108864, "x-checkpoint-delay": 20000}

// MigrationEvents reports whether the "events" capability is on: the run loop sends
// MIGRATION events only then.
func (s *Server) MigrationEvents() bool {
	s.mig.mu.Lock()
	defer s.mig.mu.Unlock()
	return s.mig.events
}

// EmitMigration sends the MIGRATION event for status if the events capability is on.
func (s *Server) EmitMigration(status string) {
	if s.MigrationEvents() {
		s.Emit("MIGRATION", map[string]string{"status": status})
	}
}

func (s *Server) migrator() (Migrator, error) {
	if mg, ok := s.m.(Migrator); ok {
		return mg, nil
	}
	return nil, errorf(GenericError, "this machine does not support migration")
}

// registerMigrate adds the migration commands to the table.
func (s *Server) registerMigrate() {
	s.mig.vals = map[string]int64{}
	s.mig.caps = map[string]bool{}
	for k, v := range paramDefaults {
		s.mig.vals[k] = v
	}
	s.add(&command{name: "query-migrate", ret: "any", run: func(*call) (any, error) {
		mg, ok := s.m.(Migrator)
		if !ok {
			return struct{}{}, nil
		}
		return migrateInfo(mg.MigrationInfo()), nil
	}})
	s.add(&command{name: "migrate", args: []arg{{"uri", "string", false}, {"blk", "boolean", true}, {"inc", "boolean", true},
		{"detach", "boolean", true}, {"resume", "boolean", true}}, ret: "empty", run: func(c *call) (any, error) {
		mg, err := s.migrator()
		if err != nil {
			return nil, err
		}
		for _, b := range []string{"blk", "inc", "resume"} {
			if raw, ok := c.args[b]; ok && string(raw) == "true" {
				return nil, errorf(GenericError, "gemu does not support migrate's '%s'", b)
			}
		}
		uri, _ := c.str("uri")
		if err := mg.Migrate(uri); err != nil {
			return nil, errorf(GenericError, "%v", err)
		}
		return struct{}{}, nil
	}})
	s.add(&command{name: "migrate_cancel", ret: "empty", run: func(*call) (any, error) {
		mg, err := s.migrator()
		if err != nil {
			return nil, err
		}
		if err := mg.MigrateCancel(); err != nil {
			return nil, errorf(GenericError, "%v", err)
		}
		return struct{}{}, nil
	}})
	s.add(&command{name: "migrate-incoming", args: []arg{{"uri", "string", false}}, ret: "empty", run: func(c *call) (any, error) {
		mg, err := s.migrator()
		if err != nil {
			return nil, err
		}
		uri, _ := c.str("uri")
		if err := mg.MigrateIncoming(uri); err != nil {
			return nil, errorf(GenericError, "%v", err)
		}
		return struct{}{}, nil
	}})
	s.add(&command{name: "query-migrate-capabilities", ret: "any", run: func(*call) (any, error) {
		type cs struct {
			Capability string `json:"capability"`
			State      bool   `json:"state"`
		}
		out := make([]cs, 0, len(migrateCaps))
		s.mig.mu.Lock()
		defer s.mig.mu.Unlock()
		for _, n := range migrateCaps {
			out = append(out, cs{n, n == "events" && s.mig.events || s.mig.caps[n]})
		}
		return out, nil
	}})
	s.add(&command{name: "migrate-set-capabilities", args: []arg{{"capabilities", "array", false}}, ret: "empty",
		run: func(c *call) (any, error) {
			var caps []map[string]json.RawMessage
			if err := json.Unmarshal(c.args["capabilities"], &caps); err != nil {
				return nil, errorf(GenericError, "Invalid parameter type for 'capabilities[0]', expected: object")
			}
			events := s.MigrationEvents()
			set := map[string]bool{}
			for i, cp := range caps {
				var name string
				var state bool
				if json.Unmarshal(cp["capability"], &name) != nil {
					return nil, errorf(GenericError, "Parameter 'capabilities[%d].capability' is missing", i)
				}
				if json.Unmarshal(cp["state"], &state) != nil {
					return nil, errorf(GenericError, "Parameter 'capabilities[%d].state' is missing", i)
				}
				known := false
				for _, n := range migrateCaps {
					known = known || n == name
				}
				switch {
				case !known:
					return nil, errorf(GenericError, "Parameter 'capability' does not accept value '%s'", name)
				case name == "events":
					events = state
				case settableCaps[name]:
					set[name] = state
				case state:
					return nil, errorf(GenericError, "gemu does not support the migration capability '%s'", name)
				}
			}
			s.mig.mu.Lock()
			s.mig.events = events
			for k, v := range set {
				s.mig.caps[k] = v
			}
			s.mig.mu.Unlock()
			return struct{}{}, nil
		}})
	s.add(&command{name: "query-migrate-parameters", ret: "any", run: func(*call) (any, error) {
		s.mig.mu.Lock()
		defer s.mig.mu.Unlock()
		// The parameters gemu has no use for, at QEMU 7.2's defaults.
		out := map[string]any{"block-incremental": false, "compress-level": 1, "compress-threads": 8,
			"compress-wait-thread": true, "cpu-throttle-tailslow": false, "decompress-threads": 2,
			"multifd-compression": "none", "multifd-zlib-level": 1, "multifd-zstd-level": 1,
			"tls-authz": "", "tls-creds": "", "tls-hostname": ""}
		for k, v := range s.mig.vals {
			out[k] = v
		}
		return out, nil
	}})
	s.add(&command{name: "migrate-set-parameters", args: []arg{{"max-bandwidth", "integer", true}, {"downtime-limit", "integer", true},
		{"announce-initial", "integer", true}, {"announce-max", "integer", true}, {"announce-rounds", "integer", true},
		{"announce-step", "integer", true}, {"throttle-trigger-threshold", "integer", true}, {"cpu-throttle-initial", "integer", true},
		{"cpu-throttle-increment", "integer", true}, {"max-postcopy-bandwidth", "integer", true}, {"max-cpu-throttle", "integer", true},
		{"multifd-channels", "integer", true}, {"xbzrle-cache-size", "integer", true}, {"x-checkpoint-delay", "integer", true}},
		ret: "empty", run: func(c *call) (any, error) {
			set := map[string]int64{}
			for k, raw := range c.args {
				var v int64
				if err := json.Unmarshal(raw, &v); err != nil || v < 0 {
					return nil, errorf(GenericError, "Parameter '%s' expects a non-negative integer", k)
				}
				set[k] = v
			}
			if v, ok := set["downtime-limit"]; ok && v > 2000000 {
				return nil, errorf(GenericError, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds")
			}
			s.mig.mu.Lock()
			for k, v := range set {
				s.mig.vals[k] = v
			}
			s.mig.mu.Unlock()
			return struct{}{}, nil
		}})
}

// migrateInfo is query-migrate's reply in QEMU 7.2's shape: {} before any migration.
func migrateInfo(i MigrationInfo) any {
	if i.Status == "" || i.Status == MigNone {
		return struct{}{}
	}
	out := map[string]any{"status": i.Status}
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	switch i.Status {
	case MigSetup:
		return out
	case MigFailed:
		out["error-desc"] = i.Error
		return out
	}
	mbps := 0.0
	if i.Bandwidth > 0 {
		mbps = i.Bandwidth * 8 / 1e6
	} else if i.Total > 0 {
		mbps = float64(i.Sent) * 8 / 1e6 / i.Total.Seconds()
	}
	remaining := uint64(0)
	switch {
	case i.Live && i.Status != MigCompleted:
		remaining = i.Remaining
	case i.Status == MigActive && i.RAMTotal > (i.Normal+i.Duplicate)*4096:
		remaining = i.RAMTotal - (i.Normal+i.Duplicate)*4096
	}
	syncs := max(i.Syncs, 1)
	pps := 0.0
	if i.Total > 0 {
		pps = float64(i.Normal+i.Duplicate) / i.Total.Seconds()
	}
	out["ram"] = map[string]any{"transferred": i.Sent, "remaining": remaining, "total": i.RAMTotal,
		"duplicate": i.Duplicate, "skipped": 0, "normal": i.Normal, "normal-bytes": i.Normal * 4096,
		"dirty-pages-rate": i.DirtyRate, "mbps": mbps, "dirty-sync-count": syncs, "dirty-sync-missed-zero-copy": 0, "postcopy-requests": 0, "page-size": 4096,
		"multifd-bytes": 0, "pages-per-second": uint64(pps), "precopy-bytes": i.Sent, "downtime-bytes": 0, "postcopy-bytes": 0}
	out["total-time"] = ms(i.Total)
	out["setup-time"] = ms(i.Setup)
	if i.Status == MigCompleted {
		out["downtime"] = ms(i.Downtime)
	} else if i.Live {
		out["expected-downtime"] = ms(i.ExpectedDowntime)
	} else {
		out["expected-downtime"] = ms(i.Downtime)
	}
	if i.Throttle > 0 && i.Status == MigActive {
		out["cpu-throttle-percentage"] = i.Throttle
	}
	return out
}

// hmpMigrate runs the HMP migration commands; false when cmd is none of them.
func (s *Server) hmpMigrate(w *strings.Builder, cmd, rest string) bool {
	switch cmd {
	case "migrate", "migrate_cancel", "migrate_incoming":
	default:
		return false
	}
	mg, ok := s.m.(Migrator)
	if !ok {
		w.WriteString("Error: this machine does not support migration\n")
		return true
	}
	var err error
	switch cmd {
	case "migrate":
		uri := ""
		for _, f := range strings.Fields(rest) {
			if f == "-d" {
				continue
			}
			if strings.HasPrefix(f, "-") {
				fmt.Fprintf(w, "Error: gemu does not support migrate's %s\n", f)
				return true
			}
			uri = f
		}
		if uri == "" {
			w.WriteString("Error: migrate: URI expected\n")
			return true
		}
		err = mg.Migrate(uri)
	case "migrate_cancel":
		err = mg.MigrateCancel()
	case "migrate_incoming":
		err = mg.MigrateIncoming(strings.TrimSpace(rest))
	}
	if err != nil {
		fmt.Fprintf(w, "Error: %v\n", err)
	}
	return true
}

// hmpInfoMigrate is "info migrate", in QEMU 7.2's layout.
func (s *Server) hmpInfoMigrate(w *strings.Builder) {
	mg, ok := s.m.(Migrator)
	if !ok {
		return
	}
	fmt.Fprintf(w, "globals:\nstore-global-state: on\nonly-migratable: off\nsend-configuration: on\nsend-section-footer: on\ndecompress-error-check: on\nclear-bitmap-shift: 18\n")
	i := mg.MigrationInfo()
	if i.Status == "" || i.Status == MigNone {
		return
	}
	fmt.Fprintf(w, "Migration status: %s\n", i.Status)
	if i.Status == MigFailed {
		fmt.Fprintf(w, " (%s)\n", i.Error)
		return
	}
	fmt.Fprintf(w, "total time: %d ms\n", i.Total.Milliseconds())
	if i.Status == MigCompleted {
		fmt.Fprintf(w, "downtime: %d ms\n", i.Downtime.Milliseconds())
	} else if i.Live {
		fmt.Fprintf(w, "expected downtime: %d ms\n", i.ExpectedDowntime.Milliseconds())
	}
	fmt.Fprintf(w, "setup: %d ms\n", i.Setup.Milliseconds())
	fmt.Fprintf(w, "transferred ram: %d kbytes\n", i.Sent>>10)
	if i.Live && i.Status != MigCompleted {
		fmt.Fprintf(w, "remaining ram: %d kbytes\n", i.Remaining>>10)
	}
	fmt.Fprintf(w, "total ram: %d kbytes\n", i.RAMTotal>>10)
	fmt.Fprintf(w, "duplicate: %d pages\n", i.Duplicate)
	fmt.Fprintf(w, "normal: %d pages\n", i.Normal)
	fmt.Fprintf(w, "normal bytes: %d kbytes\n", i.Normal*4)
	fmt.Fprintf(w, "dirty sync count: %d\n", max(i.Syncs, 1))
	if i.DirtyRate > 0 {
		fmt.Fprintf(w, "dirty pages rate: %d pages\n", i.DirtyRate)
	}
	if i.Throttle > 0 && i.Status == MigActive {
		fmt.Fprintf(w, "cpu throttle percentage: %d\n", i.Throttle)
	}
}
