package qemuopts

import (
	"fmt"
	"strconv"
)

// Topology is a CPU topology from -smp, complete: every field is at least 1 and
// Sockets*Dies*Clusters*Cores*Threads == MaxCPUs >= CPUs.
type Topology struct {
	CPUs     int // CPUs present at boot
	Sockets  int
	Dies     int // per socket (x86)
	Clusters int // per die (arm)
	Cores    int // per cluster
	Threads  int // per core
	MaxCPUs  int // CPUs possible with hotplug
}

// Flat reports whether the topology is what a board that gives every CPU its own
// core in one socket shows: one socket, die and cluster, one thread per core, no
// hotplug room.
func (t Topology) Flat() bool {
	return t.Sockets == 1 && t.Dies == 1 && t.Clusters == 1 && t.Threads == 1 && t.MaxCPUs == t.CPUs
}

// String spells the topology as -smp would take it.
func (t Topology) String() string {
	return fmt.Sprintf("cpus=%d,sockets=%d,dies=%d,clusters=%d,cores=%d,threads=%d,maxcpus=%d",
		t.CPUs, t.Sockets, t.Dies, t.Clusters, t.Cores, t.Threads, t.MaxCPUs)
}

// SMPProps is what the machine supports, as QEMU's MachineClass smp_props.
type SMPProps struct {
	Machine       string // for messages, e.g. "pc-i440fx-7.2"
	Dies          bool   // dies= above 1 allowed (x86 pc)
	Clusters      bool   // clusters= above 1 allowed (arm virt)
	PreferSockets bool   // machines before 6.2 fill sockets first
	MaxCPUs       int    // 0: no limit here (the caller checks its accelerator's)
}

// maxTopo bounds each -smp number so products cannot overflow.
const maxTopo = 1 << 20

var smpKeys = []string{"cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus"}

// ParseSMP parses -smp [cpus=]N[,sockets=][,dies=][,clusters=][,cores=][,threads=][,maxcpus=]
// and completes the topology with QEMU 7.2's rules (machine_parse_smp_config): missing
// cores are computed before missing sockets (sockets first with PreferSockets), threads
// last; maxcpus defaults to cpus, cpus to maxcpus. Its messages are QEMU's. Zero values
// (deprecated in QEMU 7.2, an error since 9.0) are refused.
func ParseSMP(spec string, p SMPProps) (Topology, error) {
	o, err := ParseOpt("smp", spec, "cpus")
	if err != nil {
		return Topology{}, err
	}
	if o.Help {
		return Topology{}, o.errorf("-smp options: cpus, sockets, dies, clusters, cores, threads, maxcpus")
	}
	var v [7]uint64 // in smpKeys order
	var has [7]bool
	for _, k := range o.Keys() {
		i := -1
		for j, n := range smpKeys {
			if n == k {
				i = j
			}
		}
		if i < 0 {
			return Topology{}, o.errorf("Parameter 'smp.%s' is unexpected", k)
		}
		s, _ := o.Get(k)
		n, err := parseUint(s)
		if err != nil {
			return Topology{}, o.errorf("Parameter 'smp.%s' expects integer", k)
		}
		if n > maxTopo {
			return Topology{}, o.errorf("Value '%s' is too large for parameter 'smp.%s'", s, k)
		}
		if n == 0 {
			return Topology{}, o.errorf("Invalid CPU topology: CPU topology parameters must be greater than zero")
		}
		v[i], has[i] = n, true
	}
	cpus, sockets, dies, clusters, cores, threads, maxcpus := v[0], v[1], v[2], v[3], v[4], v[5], v[6]
	if !p.Dies && dies > 1 {
		return Topology{}, o.errorf("dies not supported by this machine's CPU topology")
	}
	if !p.Clusters && clusters > 1 {
		return Topology{}, o.errorf("clusters not supported by this machine's CPU topology")
	}
	dies = max(dies, 1)
	clusters = max(clusters, 1)
	or1 := func(x uint64) uint64 { return max(x, 1) }
	if cpus == 0 && maxcpus == 0 {
		sockets, cores, threads = or1(sockets), or1(cores), or1(threads)
	} else {
		if maxcpus == 0 {
			maxcpus = cpus
		}
		if p.PreferSockets {
			if sockets == 0 {
				cores, threads = or1(cores), or1(threads)
				sockets = maxcpus / (dies * clusters * cores * threads)
			} else if cores == 0 {
				threads = or1(threads)
				cores = maxcpus / (sockets * dies * clusters * threads)
			}
		} else {
			if cores == 0 {
				sockets, threads = or1(sockets), or1(threads)
				cores = maxcpus / (sockets * dies * clusters * threads)
			} else if sockets == 0 {
				threads = or1(threads)
				sockets = maxcpus / (dies * clusters * cores * threads)
			}
		}
		if threads == 0 {
			threads = maxcpus / (sockets * dies * clusters * cores)
		}
	}
	if maxcpus == 0 {
		// Only given values (each ≤ maxTopo) here; the product is bounded too.
		maxcpus = 1
		for _, x := range []uint64{sockets, dies, clusters, cores, threads} {
			maxcpus *= x
			if maxcpus > maxTopo {
				return Topology{}, o.errorf("Invalid CPU topology: more than %d CPUs", maxTopo)
			}
		}
	}
	if cpus == 0 {
		cpus = maxcpus
	}
	hier := func() string {
		s := "sockets (" + strconv.FormatUint(sockets, 10) + ")"
		if p.Dies {
			s += " * dies (" + strconv.FormatUint(dies, 10) + ")"
		}
		if p.Clusters {
			s += " * clusters (" + strconv.FormatUint(clusters, 10) + ")"
		}
		return s + " * cores (" + strconv.FormatUint(cores, 10) + ") * threads (" + strconv.FormatUint(threads, 10) + ")"
	}
	if !productIs(maxcpus, sockets, dies, clusters, cores, threads) {
		return Topology{}, o.errorf("Invalid CPU topology: product of the hierarchy must match maxcpus: %s != maxcpus (%d)", hier(), maxcpus)
	}
	if maxcpus < cpus {
		return Topology{}, o.errorf("Invalid CPU topology: maxcpus must be equal to or greater than smp: %s == maxcpus (%d) < smp_cpus (%d)", hier(), maxcpus, cpus)
	}
	if p.MaxCPUs > 0 && maxcpus > uint64(p.MaxCPUs) {
		return Topology{}, o.errorf("Invalid SMP CPUs %d. The max CPUs supported by machine '%s' is %d", maxcpus, p.Machine, p.MaxCPUs)
	}
	return Topology{CPUs: int(cpus), Sockets: int(sockets), Dies: int(dies), Clusters: int(clusters),
		Cores: int(cores), Threads: int(threads), MaxCPUs: int(maxcpus)}, nil
}

// productIs reports whether the factors multiply to exactly want, without overflow.
func productIs(want uint64, f ...uint64) bool {
	p := uint64(1)
	for _, x := range f {
		if x == 0 || p > want/x {
			return false // want ≥ 1 here
		}
		p *= x
	}
	return p == want
}
