package virtio_test

import (
	"errors"
	"testing"

	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

func TestTransportSelectorsAndQueueState(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	d := &testDev{max: []uint16{64, 32}, feat: 1 << 40}
	tr := virtio.NewTransport(d, m, &virtiotest.IRQ{})
	if tr.NumQueues() != 2 {
		t.Fatal("NumQueues")
	}
	tr.SetDeviceFeatureSel(1)
	if tr.DeviceFeatureWindow() != 1|1<<8 { // VERSION_1 (32) and bit 40
		t.Fatalf("window 1 = %#x", tr.DeviceFeatureWindow())
	}
	tr.SetDriverFeatureSel(5)
	tr.SetDriverFeatureWindow(0xffffffff) // out-of-range window: ignored
	if tr.DriverFeatures() != 0 || tr.DriverFeatureWindow() != 0 {
		t.Fatal("out-of-range driver feature window changed features")
	}
	tr.SetQueueSel(1)
	if tr.QueueMax() != 32 {
		t.Fatal("QueueMax of queue 1")
	}
	tr.SetQueueSel(2)
	if tr.QueueMax() != 0 || tr.Queue() != (virtio.QueueConfig{}) {
		t.Fatal("queue 2 does not exist")
	}
	tr.UpdateQueue(func(q *virtio.QueueConfig) { q.Size = 8 }) // ignored, no panic
	tr.SetQueueSel(0)
	tr.UpdateQueue(func(q *virtio.QueueConfig) { q.Size, q.Desc, q.Ready = 16, 0x1000, true })
	tr.UpdateQueue(func(q *virtio.QueueConfig) { q.Size = 4 }) // ready: ignored
	if q := tr.Queue(); q.Size != 16 || q.Desc != 0x1000 || !q.Ready {
		t.Fatalf("queue 0 = %+v", q)
	}
	tr.UpdateQueue(func(q *virtio.QueueConfig) { q.Ready = false })
	tr.UpdateQueue(func(q *virtio.QueueConfig) { q.Size = 4 })
	if tr.Queue().Size != 4 {
		t.Fatal("size not writable after un-ready")
	}
	tr.Reset()
	if tr.Queue() != (virtio.QueueConfig{}) || tr.QueueSel() != 0 {
		t.Fatal("reset kept queue state")
	}
}

func TestActivateFailure(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	r := virtiotest.NewRing(m, 16, ramBase, 4096)
	d := &testDev{max: []uint16{16}, actErr: errors.New("no backend")}
	irq := &virtiotest.IRQ{}
	tr := virtiotest.Bringup(d, m, irq, 0, r)
	if tr.Active() || tr.Status()&virtio.StatusNeedsReset == 0 || tr.Err() == nil {
		t.Fatalf("status %#x err %v", tr.Status(), tr.Err())
	}
	if _, cfg := irq.Counts(); cfg != 1 {
		t.Fatal("no config interrupt for the failed activation")
	}
	// NEEDS_RESET sticks until reset, whatever the driver writes.
	tr.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	if tr.Status()&virtio.StatusNeedsReset == 0 || tr.Active() {
		t.Fatal("driver cleared NEEDS_RESET")
	}
	tr.SetStatus(0)
	if tr.Status() != 0 {
		t.Fatal("reset")
	}
}

func TestFeatureChecker(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	d := &checkDev{testDev{max: []uint16{16}, feat: 1<<1 | 1<<2}}
	tr := virtio.NewTransport(d, m, &virtiotest.IRQ{})
	tr.SetDriverFeatureSel(1)
	tr.SetDriverFeatureWindow(1)
	tr.SetDriverFeatureSel(0)
	tr.SetDriverFeatureWindow(1 << 2) // bit 2 without bit 1: the device refuses
	tr.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	if tr.Status()&virtio.StatusFeaturesOK != 0 {
		t.Fatal("device's refusal ignored")
	}
	tr.SetDriverFeatureWindow(1<<1 | 1<<2)
	tr.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	if tr.Status()&virtio.StatusFeaturesOK == 0 {
		t.Fatal("acceptable features refused")
	}
}

type checkDev struct{ testDev }

func (c *checkDev) CheckFeatures(f uint64) error {
	if f&(1<<2) != 0 && f&(1<<1) == 0 {
		return errors.New("feature 2 needs feature 1")
	}
	return nil
}

func TestNotifyAll(t *testing.T) {
	m := virtiotest.NewMem(ramBase, ramSize)
	defer m.Close()
	r0 := virtiotest.NewRing(m, 16, ramBase, 4096)
	r1 := virtiotest.NewRing(m, 16, ramBase+0x10000, 4096)
	d := &testDev{max: []uint16{16, 16, 16}}
	tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, 0, r0, nil, r1)
	if d.act.Queues[1] != nil {
		t.Fatal("queue 1 was not enabled")
	}
	tr.NotifyAll()
	for _, i := range []int{0, 2} {
		select {
		case <-d.act.Queues[i].Kicked():
		default:
			t.Fatalf("queue %d not kicked", i)
		}
	}
	tr.Notify(2)
	tr.Notify(2) // coalesced, never blocks
	<-d.act.Queues[2].Kicked()
	select {
	case <-d.act.Queues[2].Kicked():
		t.Fatal("kicks not coalesced")
	default:
	}
}
