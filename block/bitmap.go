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

// BitmapMeasurer is a Format that can hold bitmaps: the bytes they would take in an
// image of virtual size size created with opts (qemu-img measure's "bitmaps size").
type BitmapMeasurer interface {
	MeasureBitmaps(list []BitmapInfo, size int64, opts map[string]string) (int64, error)
}
