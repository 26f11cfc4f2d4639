package shard

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestFrameClass(t *testing.T) {
	tests := []struct {
		n    int
		want int
	}{
		{
			n:    0,
			want: 0,
		},
		{
			n:    64,
			want: 0,
		},
		{
			n:    65,
			want: 1,
		},
		{
			n:    1000,
			want: 4,
		},
		{
			n:    1<<16 + 10,
			want: maxFrameShift - minFrameShift,
		},
		{
			n:    1 << 17,
			want: maxFrameShift - minFrameShift,
		},
		{
			n:    1<<17 + 1,
			want: -1,
		},
	}
	for _, tt := range tests {
		if got := frameClass(tt.n); got != tt.want {
			t.Errorf("frameClass(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

func TestNewFrameCapacity(t *testing.T) {
	for _, hint := range []int{0, 1, 64, 65, 1000, 1 << 17, 1<<17 + 1} {
		f := NewFrame(hint)
		if cap(f.Buf) < hint {
			t.Errorf("NewFrame(%d): cap %d", hint, cap(f.Buf))
		}
		if len(f.Buf) != 0 {
			t.Errorf("NewFrame(%d): len %d, want 0", hint, len(f.Buf))
		}
		f.Release()
	}
}

func TestFrameRecycledBufferIsEmpty(t *testing.T) {
	f := NewFrame(100)
	f.Buf = append(f.Buf[:0], "hello"...)
	f.Release()
	for range 10 {
		g := NewFrame(100)
		if len(g.Bytes()) != 0 {
			t.Fatalf("recycled frame has %q", g.Bytes())
		}
		g.Release()
	}
}

func TestFrameGrownBufferFiledUnderServableClass(t *testing.T) {
	f := NewFrame(64)
	f.Buf = append(f.Buf[:0], bytes.Repeat([]byte{'x'}, 100)...)
	f.Release()
	for range 10 {
		g := NewFrame(128)
		if cap(g.Buf) < 128 {
			t.Fatalf("NewFrame(128) got cap %d", cap(g.Buf))
		}
		g.Release()
	}
}

func TestFrameRefCount(t *testing.T) {
	f := NewFrame(10)
	f.Buf = append(f.Buf[:0], "abc"...)
	f.Retain()
	f.Retain()
	f.Release()
	f.Release()
	if string(f.Bytes()) != "abc" {
		t.Fatalf("frame content %q after partial release", f.Bytes())
	}
	if got := f.refs.Load(); got != 1 {
		t.Fatalf("refs = %d, want 1", got)
	}
	f.Release()
}

func TestFrameMisuse(t *testing.T) {
	tests := []struct {
		name string
		fn   func()
	}{
		{
			name: "double release",
			fn: func() {
				f := &Frame{}
				f.refs.Store(1)
				f.Release()
				f.Release()
			},
		},
		{
			name: "retain after release",
			fn: func() {
				f := &Frame{}
				f.refs.Store(1)
				f.Release()
				f.Retain()
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				msg, _ := recover().(string)
				if !strings.HasPrefix(msg, "BUG: ") {
					t.Fatalf("panic %q, want BUG: ...", msg)
				}
			}()
			tt.fn()
		})
	}
}

func TestFrameNoAllocs(t *testing.T) {
	payload := []byte("0123456789")
	NewFrame(len(payload)).Release()
	allocs := testing.AllocsPerRun(1000, func() {
		f := NewFrame(len(payload))
		f.Buf = append(f.Buf[:0], payload...)
		f.Retain()
		f.Release()
		f.Release()
	})
	if allocs != 0 {
		t.Fatalf("NewFrame/Retain/Release: %v allocs, want 0", allocs)
	}
}

// TestFrameSharedAcrossGoroutines is a frame held by the publisher while
// several loops retain and release it concurrently.
func TestFrameSharedAcrossGoroutines(t *testing.T) {
	f := NewFrame(16)
	f.Buf = append(f.Buf[:0], "shared"...)
	var wg sync.WaitGroup
	for range 8 {
		f.Retain() // the reference handed to the loop
		wg.Go(func() {
			for range 10_000 {
				f.Retain()
				if string(f.Bytes()) != "shared" {
					t.Error("frame content changed while referenced")
				}
				f.Release()
			}
			f.Release()
		})
	}
	wg.Wait()
	if got := f.refs.Load(); got != 1 {
		t.Fatalf("refs = %d, want the publisher's 1", got)
	}
	f.Release()
}
