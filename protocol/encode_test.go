package protocol

import (
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name string
		got  func() []byte
		want string
	}{
		{
			name: "ok with result",
			got:  func() []byte { return AppendOK(nil, 2, []byte(`{"x":1}`)) },
			want: `{"id":2,"ok":true,"result":{"x":1}}`,
		},
		{
			name: "ok without result",
			got:  func() []byte { return AppendOK(nil, 9, nil) },
			want: `{"id":9,"ok":true}`,
		},
		{
			name: "error",
			got:  func() []byte { return AppendError(nil, 7, CodeBadRequest, "unknown op") },
			want: `{"id":7,"error":{"code":400,"message":"unknown op"}}`,
		},
		{
			name: "error escapes message",
			got:  func() []byte { return AppendError(nil, 0, CodeInternal, "a \"b\"\n") },
			want: `{"id":0,"error":{"code":500,"message":"a \"b\"\n"}}`,
		},
		{
			name: "position result",
			got:  func() []byte { return AppendPositionResult(nil, 2, 21, "k3") },
			want: `{"id":2,"ok":true,"result":{"offset":21,"epoch":"k3"}}`,
		},
		{
			name: "position result without history",
			got:  func() []byte { return AppendPositionResult(nil, 2, 0, "") },
			want: `{"id":2,"ok":true,"result":{}}`,
		},
		{
			name: "recovery with publications",
			got: func() []byte {
				b := AppendRecoveryOpen(nil, 1, 20, "k3", true)
				b = AppendPublicationItem(b, 0, 18, []byte(`{"a":1}`))
				b = AppendPublicationItem(b, 1, 19, []byte(`"s"`))
				return AppendListClose(b)
			},
			want: `{"id":1,"ok":true,"result":{"offset":20,"epoch":"k3","recovered":true,"publications":[{"offset":18,"data":{"a":1}},{"offset":19,"data":"s"}]}}`,
		},
		{
			name: "recovery failed, empty list",
			got:  func() []byte { return AppendListClose(AppendRecoveryOpen(nil, 1, 20, "k4", false)) },
			want: `{"id":1,"ok":true,"result":{"offset":20,"epoch":"k4","recovered":false,"publications":[]}}`,
		},
		{
			name: "history",
			got: func() []byte {
				return AppendListClose(AppendPublicationItem(AppendHistoryOpen(nil, 5, 21, "k3"), 0, 21, []byte(`1`)))
			},
			want: `{"id":5,"ok":true,"result":{"offset":21,"epoch":"k3","publications":[{"offset":21,"data":1}]}}`,
		},
		{
			name: "presence",
			got: func() []byte {
				b := AppendPresenceOpen(nil, 4)
				b = AppendPresenceItem(b, 0, "c1", "u1", nil)
				b = AppendPresenceItem(b, 1, "c2", "u\"2", []byte(`{"n":"x"}`))
				return AppendListClose(b)
			},
			want: `{"id":4,"ok":true,"result":{"clients":[{"client":"c1","user":"u1"},{"client":"c2","user":"u\"2","info":{"n":"x"}}]}}`,
		},
		{
			name: "presence stats",
			got:  func() []byte { return AppendPresenceStatsResult(nil, 4, 3, 2) },
			want: `{"id":4,"ok":true,"result":{"clients":3,"users":2}}`,
		},
		{
			name: "publication",
			got:  func() []byte { return AppendPublication(nil, "chat:room42", 21, []byte(`{"text":"hi"}`)) },
			want: `{"channel":"chat:room42","offset":21,"data":{"text":"hi"}}`,
		},
		{
			name: "publication without offset",
			got:  func() []byte { return AppendPublication(nil, "chat:room42", 0, []byte(`1`)) },
			want: `{"channel":"chat:room42","data":1}`,
		},
		{
			name: "join",
			got:  func() []byte { return AppendJoin(nil, "chat:a", "c1", "u1", nil) },
			want: `{"join":{"channel":"chat:a","client":"c1","user":"u1"}}`,
		},
		{
			name: "leave with info",
			got:  func() []byte { return AppendLeave(nil, "chat:a", "c1", "u1", []byte(`{"n":1}`)) },
			want: `{"leave":{"channel":"chat:a","client":"c1","user":"u1","info":{"n":1}}}`,
		},
		{
			name: "disconnect",
			got:  func() []byte { return AppendDisconnect(nil, DisconnectShutdown, "shutdown", true) },
			want: `{"disconnect":{"code":4001,"reason":"shutdown","reconnect":true}}`,
		},
		{
			name: "disconnect with a reconnect delay",
			got:  func() []byte { return AppendDisconnectDelay(nil, DisconnectShutdown, "shutdown", true, 2345) },
			want: `{"disconnect":{"code":4001,"reason":"shutdown","reconnect":true,"delay":2345}}`,
		},
		{
			name: "disconnect with a zero delay leaves it out",
			got:  func() []byte { return AppendDisconnectDelay(nil, DisconnectShutdown, "shutdown", true, 0) },
			want: `{"disconnect":{"code":4001,"reason":"shutdown","reconnect":true}}`,
		},
		{
			name: "ping",
			got:  func() []byte { return AppendPing(nil) },
			want: `{"ping":{}}`,
		},
		{
			name: "lagged",
			got:  func() []byte { return AppendLagged(nil, "chat:a", 17) },
			want: `{"lagged":{"channel":"chat:a","offset":17}}`,
		},
		{
			name: "command subscribe",
			got: func() []byte {
				return AppendCommand(nil, &Command{ID: 1, Op: OpSubscribe, Channel: []byte("chat:room42"), HasSince: true, Since: Position{Offset: 17, Epoch: []byte("k3")}})
			},
			want: `{"id":1,"op":"subscribe","channel":"chat:room42","since":{"offset":17,"epoch":"k3"}}`,
		},
		{
			name: "command history",
			got: func() []byte {
				return AppendCommand(nil, &Command{ID: 5, Op: OpHistory, Channel: []byte("chat:a"), Limit: 50})
			},
			want: `{"id":5,"op":"history","channel":"chat:a","limit":50}`,
		},
		{
			name: "command publish",
			got: func() []byte {
				return AppendCommand(nil, &Command{ID: 2, Op: OpPublish, Channel: []byte("chat:a"), Data: []byte(`{"t":"hi"}`), Limit: NoLimit})
			},
			want: `{"id":2,"op":"publish","channel":"chat:a","data":{"t":"hi"}}`,
		},
		{
			name: "command refresh",
			got:  func() []byte { return AppendCommand(nil, &Command{ID: 6, Op: OpRefresh, Token: []byte("t")}) },
			want: `{"id":6,"op":"refresh","token":"t"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.got()
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
			if err := fastjson.ValidateBytes(got); err != nil {
				t.Fatalf("invalid JSON %s: %v", got, err)
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "plain",
			in:   "chat:room42",
			want: `"chat:room42"`,
		},
		{
			name: "quotes and backslash",
			in:   `a"b\c`,
			want: `"a\"b\\c"`,
		},
		{
			name: "control characters",
			in:   "\x00\x1f\t\r\n",
			want: `"\u0000\u001f\t\r\n"`,
		},
		{
			name: "multibyte kept",
			in:   "héllo 世界 🎉",
			want: `"héllo 世界 🎉"`,
		},
		{
			name: "line separators escaped",
			in:   "a\u2028b\u2029c",
			want: `"a\u2028b\u2029c"`,
		},
		{
			name: "invalid UTF-8 replaced",
			in:   "a\xffb\xc3",
			want: `"a\ufffdb\ufffd"`,
		},
		{
			name: "surrogate encoded in UTF-8 replaced",
			in:   "\xed\xa0\x80",
			want: `"\ufffd\ufffd\ufffd"`,
		},
		{
			name: "overlong replaced",
			in:   "\xc0\xaf",
			want: `"\ufffd\ufffd"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(appendString(nil, tt.in)); got != tt.want {
				t.Fatalf("appendString(%q) = %s, want %s", tt.in, got, tt.want)
			}
			if got := string(appendString(nil, []byte(tt.in))); got != tt.want {
				t.Fatalf("appendString([]byte(%q)) = %s, want %s", tt.in, got, tt.want)
			}
			var p fastjson.Parser
			v, err := p.Parse(tt.want)
			if err != nil {
				t.Fatalf("output is not JSON: %v", err)
			}
			if tt.in == strings.ToValidUTF8(tt.in, "\ufffd") && string(v.GetStringBytes()) != tt.in {
				t.Fatalf("round trip = %q, want %q", v.GetStringBytes(), tt.in)
			}
		})
	}
}

func TestEncodeAllocs(t *testing.T) {
	data := []byte(`{"text":"hello, world"}`)
	buf := make([]byte, 0, 1024)
	tests := []struct {
		name string
		fn   func()
	}{
		{
			name: "AppendPublication",
			fn:   func() { buf = AppendPublication(buf[:0], "chat:room\"42", 123456, data) },
		},
		{
			name: "AppendOK",
			fn:   func() { buf = AppendOK(buf[:0], 42, data) },
		},
		{
			name: "AppendError",
			fn:   func() { buf = AppendError(buf[:0], 42, CodeConflict, MsgAlreadySubscribed) },
		},
		{
			name: "recovery reply",
			fn: func() {
				buf = AppendRecoveryOpen(buf[:0], 1, 20, "k3", true)
				buf = AppendPublicationItem(buf, 0, 19, data)
				buf = AppendPublicationItem(buf, 1, 20, data)
				buf = AppendListClose(buf)
			},
		},
		{
			name: "AppendJoin",
			fn:   func() { buf = AppendJoin(buf[:0], "chat:a", "client-1", "user-1", data) },
		},
		{
			name: "AppendLagged",
			fn:   func() { buf = AppendLagged(buf[:0], "chat:a", 17) },
		},
		{
			name: "AppendDisconnectDelay",
			fn:   func() { buf = AppendDisconnectDelay(buf[:0], DisconnectShutdown, "shutdown", true, 2345) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(100, tt.fn); allocs != 0 {
				t.Fatalf("%s allocates %v times per run, want 0", tt.name, allocs)
			}
			if len(buf) == 0 {
				t.Fatal("nothing encoded")
			}
		})
	}
}
