package protocol

import "testing"

func BenchmarkDecode(b *testing.B) {
	benches := []struct {
		name string
		msg  string
	}{
		{
			name: "subscribe",
			msg:  `{"id":1,"op":"subscribe","channel":"chat:room42","since":{"offset":17,"epoch":"k3"}}`,
		},
		{
			name: "publish_64B",
			msg:  `{"id":2,"op":"publish","channel":"chat:room42","data":{"text":"0123456789012345678901234567890123456789012345678901"}}`,
		},
		{
			name: "ping",
			msg:  `{"id":9,"op":"ping"}`,
		},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			var d Decoder
			var cmd Command
			msg := []byte(bb.msg)
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := d.Decode(msg, &cmd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendPublication(b *testing.B) {
	data := []byte(`{"text":"0123456789012345678901234567890123456789012345678901"}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPublication(buf[:0], "chat:room42", 123456, data)
	}
	b.SetBytes(int64(len(buf)))
}
