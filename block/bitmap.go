package block

// BitmapInfo describes one persistent dirty bitmap as qemu-img info shows it.
type BitmapInfo struct {
	Name        string
	Granularity int64
	InUse       bool // "in-use": inconsistent (a writer did not store it)
	Auto        bool // enabled: records writes
}

// Bitmapper is a driver that keeps persistent dirty bitmaps (qcow2). Changes are made
// in memory and stored when the image is closed, as QEMU stores them.
type Bitmapper interface {
	// SupportsBitmaps is false where the image cannot keep them (qcow2 v2).
	SupportsBitmaps() bool
	Bitmaps() []BitmapInfo
	AddBitmap(name string, granularity int64, disabled bool) error
	RemoveBitmap(name string) error
	ClearBitmap(name string) error
	EnableBitmap(name string, on bool) error
	// MergeBitmap ORs bitmap srcName of src (the same image when src is nil) into dst.
	MergeBitmap(dst string, src Driver, srcName string) error
	// BitmapData is the bitmap serialised as stored: LSB first, one bit per granule.
	BitmapData(name string) ([]byte, error)
}

// BitmapMeasurer is a Format that can hold bitmaps: the bytes src's bitmaps would take
// in an image of virtual size size created with opts (qemu-img measure's "bitmaps
// size"); show is false when qemu-img prints no such line (the source or the target
// cannot keep persistent bitmaps).
type BitmapMeasurer interface {
	MeasureBitmaps(src Driver, size int64, opts map[string]string) (n int64, show bool, err error)
}

// SnapshotLoader is a read-only driver that can read as one of its internal snapshots
// (convert -l, measure -l): id and/or name select it; an empty string matches any.
type SnapshotLoader interface {
	LoadSnapshot(id, name string) error
}
