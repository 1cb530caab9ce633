package qcow2

import (
	"bytes"
	"math/rand"
	"testing"
)

func benchData() (random, text []byte) {
	random = make([]byte, 65536)
	rand.New(rand.NewSource(1)).Read(random)
	text = bytes.Repeat([]byte("hello world text 1234 "), 65536/22+1)[:65536]
	return
}

func BenchmarkCompress(b *testing.B) {
	random, text := benchData()
	for _, c := range []struct {
		name string
		f    func([]byte, int) ([]byte, error)
		in   []byte
	}{{"zlib-random", deflateCluster, random}, {"zlib-text", deflateCluster, text},
		{"zstd-random", zstdCluster, random}, {"zstd-text", zstdCluster, text}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.in)))
			for i := 0; i < b.N; i++ {
				c.f(c.in, 65535)
			}
		})
	}
}

func BenchmarkDecompress(b *testing.B) {
	_, text := benchData()
	z, _ := deflateCluster(text, 65535)
	s, _ := zstdCluster(text, 65535)
	dst := make([]byte, 65536)
	b.Run("zlib", func(b *testing.B) {
		b.SetBytes(65536)
		for i := 0; i < b.N; i++ {
			if err := inflateCluster(dst, append(z, 1, 2, 3)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("zstd", func(b *testing.B) {
		b.SetBytes(65536)
		for i := 0; i < b.N; i++ {
			if err := unzstdCluster(dst, append(s, 1, 2, 3)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
