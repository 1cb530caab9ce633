package netdev_test

import (
	"fmt"

	"gemu/hw/netdev"
)

// A NIC model's side: open the backend from -netdev keys (the main has already
// refused keys outside netdev.Keys), register the receive path, negotiate the vnet
// header when the guest took the offloads, and send guest frames.
func Example() {
	keys := map[string]string{"hostfwd": "tcp:127.0.0.1:0-:22", "restrict": "on"}
	be, err := netdev.Open("user", func(k string) (string, bool) { v, ok := keys[k]; return v, ok })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer be.Close()
	rxRoom := true // the RX virtqueue has buffers
	be.SetReceiver(func(frame []byte) bool {
		if !rxRoom {
			return false // held by the backend; call be.RxReady() when buffers arrive
		}
		// copy frame into guest buffers, raise the interrupt
		return true
	})
	if vb, ok := be.(netdev.VnetHdrBackend); ok {
		// after feature negotiation, before the guest's first frame:
		// GUEST_CSUM and GUEST_TSO4 taken → TSO frames with their header
		_ = vb.EnableVnetHdr(true)
	}
	if o, ok := be.(netdev.Offloader); ok {
		fmt.Println("vnet header:", o.Offloads().VnetHdr, "max frame:", o.Offloads().MaxFrame)
	}
	// Output: vnet header: true max frame: 65549
}
