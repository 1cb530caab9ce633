package qcow2

import (
	"errors"

	"gemu/block"
)

// Measure computes `qemu-img measure` figures for a qcow2 image of the given size
// with opts, holding src's allocated data (src nil: an empty image), with QEMU's
// formulas: the fully allocated size is the preallocated image (header, L1, L2,
// refcount metadata and every data cluster); the required size drops the data
// clusters src does not need.
func (format) Measure(size int64, opts map[string]string, src block.Driver) (int64, int64, error) {
	o := map[string]string{}
	for k, v := range opts {
		if k != "size" {
			o[k] = v
		}
	}
	c, err := parseCreateOpts(block.CreateOptions{Options: o})
	if err != nil {
		return 0, 0, err
	}
	cs := int64(1) << c.clusterBits
	es := int64(8)
	if c.extL2 {
		es = 16
	}
	virt := roundUp(size, cs)
	var required int64
	if src != nil {
		ssize := src.Size()
		virt = roundUp(ssize, cs)
		if c.backing != "" {
			required = virt
		} else {
			for off := int64(0); off < ssize; {
				st, err := src.BlockStatus(off, ssize-off)
				if err != nil {
					return 0, 0, err
				}
				pnum := st.Length
				if pnum <= 0 {
					break
				}
				if !st.Zero && st.Data && st.Allocated {
					pnum = roundUp(off+pnum, cs) - off
					required += off%cs + pnum
				}
				off += pnum
			}
		}
	}
	if l2Tables := ceilDiv(virt/cs, cs/es); l2Tables*8 > maxL1Bytes {
		return 0, 0, errors.New("The image size is too large (try using a larger cluster size)")
	}
	if c.prealloc == "full" || c.prealloc == "falloc" {
		required = virt
	}
	full := preallocSize(virt, cs, c.refcountOrder, es)
	return full - virt + required, full, nil
}

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }
func ceilDiv(n, d int64) int64 { return (n + d - 1) / d }

// preallocSize is QEMU's qcow2_calc_prealloc_size.
func preallocSize(total, cs int64, order uint32, es int64) int64 {
	aligned := roundUp(total, cs)
	meta := cs // header
	nl2e := roundUp(aligned/cs, cs/es)
	meta += nl2e * es
	nl1e := roundUp(nl2e*es/cs, cs/8)
	meta += nl1e * 8
	meta += refcountMetadataSize((meta+aligned)/cs, cs, order)
	return meta + aligned
}

// refcountMetadataSize finds the fixed point of refcount blocks and table clusters
// needed to count clusters plus themselves.
func refcountMetadataSize(clusters, cs int64, order uint32) int64 {
	perTableCluster := cs / 8
	perBlock := cs * 8 / (int64(1) << order)
	var table, blocks, n int64
	for {
		last := n
		blocks = ceilDiv(clusters+table+blocks, perBlock)
		table = ceilDiv(blocks, perTableCluster)
		n = clusters + blocks + table
		if n == last {
			break
		}
	}
	return (blocks + table) * cs
}
