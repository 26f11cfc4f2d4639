package auth

import "testing"

func TestBearerToken(t *testing.T) {
	tests := []struct {
		value, want string
		ok          bool
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"  Bearer   abc  ", "abc", true},
		{"Bearer\tabc", "", false}, // the scheme ends with a space
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"Basic YWxhZGRpbjpvcGVuc2VzYW1l", "", false},
		{"Bearerabc", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := BearerToken([]byte(tt.value))
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tt.value, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSubprotocolToken(t *testing.T) {
	tests := []struct {
		entry, want string
		ok          bool
	}{
		{"token.abc.def.ghi", "abc.def.ghi", true},
		{"token.", "", false},
		{"token", "", false},
		{"Token.abc", "", false},
		{"wsedge.v1.json", "", false},
	}
	for _, tt := range tests {
		got, ok := SubprotocolToken([]byte(tt.entry))
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("SubprotocolToken(%q) = %q, %v; want %q, %v", tt.entry, got, ok, tt.want, tt.ok)
		}
	}
}

func TestQueryToken(t *testing.T) {
	tests := []struct {
		uri, want string
		ok        bool
	}{
		{"/ws?token=abc.def.ghi", "abc.def.ghi", true},
		{"/ws?v=1&token=abc&x=2", "abc", true},
		{"/ws?token=a%2Eb%2ec", "a.b.c", true},
		{"/ws?token=a+b", "a b", true},
		{"/ws?token=first&token=second", "first", true},
		{"/ws?token=&token=second", "", false}, // the first one counts, and it is empty
		{"/ws?token=abc#frag", "abc", true},
		{"/ws?xtoken=abc", "", false},
		{"/ws?tokens=abc", "", false},
		{"/ws?Token=abc", "", false},
		{"/ws?token", "", false},
		{"/ws?token=a%2", "", false},
		{"/ws?token=a%zz", "", false},
		{"/ws", "", false},
		{"/ws#token=abc", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		dst := []byte("keep")
		got, ok := QueryToken(dst, []byte(tt.uri))
		if ok != tt.ok || string(got[min(4, len(got)):]) != tt.want || string(got[:4]) != "keep" {
			t.Errorf("QueryToken(%q) = %q, %v; want keep%q, %v", tt.uri, got, ok, tt.want, tt.ok)
		}
	}
}

func TestExtractorPrecedence(t *testing.T) {
	type req struct {
		uri     string
		headers [][2]string
		protos  []string
	}
	tests := []struct {
		name string
		req  req
		want string
		src  Source
	}{
		{"none", req{uri: "/ws", headers: [][2]string{{"Host", "x"}}, protos: []string{"wsedge.v1.json"}}, "", SourceNone},
		{"query", req{uri: "/ws?token=q"}, "q", SourceQuery},
		{"subprotocol", req{uri: "/ws", protos: []string{"wsedge.v1.json", "token.p"}}, "p", SourceSubprotocol},
		{"header", req{uri: "/ws", headers: [][2]string{{"authorization", "Bearer h"}}}, "h", SourceHeader},
		{"header over all", req{uri: "/ws?token=q", headers: [][2]string{{"Authorization", "Bearer h"}}, protos: []string{"token.p"}}, "h", SourceHeader},
		{"subprotocol over query", req{uri: "/ws?token=q", protos: []string{"token.p"}}, "p", SourceSubprotocol},
		{"first header", req{uri: "/ws", headers: [][2]string{{"Authorization", "Basic x"}, {"Authorization", "Bearer h1"}, {"Authorization", "Bearer h2"}}}, "h1", SourceHeader},
		{"first subprotocol", req{uri: "/ws", protos: []string{"token.p1", "token.p2"}}, "p1", SourceSubprotocol},
	}
	var e Extractor
	for _, tt := range tests {
		// Callbacks in the order gobwas makes them, one Extractor reused.
		e.Reset()
		e.URI([]byte(tt.req.uri))
		for _, h := range tt.req.headers {
			e.Header([]byte(h[0]), []byte(h[1]))
		}
		for _, p := range tt.req.protos {
			buf := []byte(p)
			if isTok := e.Subprotocol(buf); isTok != (len(p) > 6 && p[:6] == "token.") {
				t.Fatalf("%s: Subprotocol(%q) = %v", tt.name, p, isTok)
			}
			copy(buf, "XXXXXXXXXX") // the request bytes go away; the token must not
		}
		tok, src := e.Token()
		if string(tok) != tt.want || src != tt.src {
			t.Errorf("%s: %q from %v, want %q from %v", tt.name, tok, src, tt.want, tt.src)
		}
	}
	if SourceHeader.String() != "header" || Source(9).String() != "invalid" {
		t.Fatal("Source names")
	}
}

func TestExtractorProtocolHeader(t *testing.T) {
	tests := []struct {
		value   string
		offered bool
		tok     string
	}{
		{"wsedge.v1.json, token.abc", true, "abc"},
		{"token.abc,wsedge.v1.json", true, "abc"},
		{" wsedge.v1.json ,\ttoken.abc\t", true, "abc"},
		{"token.a, token.b", false, "a"},
		{"chat, superchat", false, ""},
		{"token.wsedge.v1.json", false, "wsedge.v1.json"}, // a token entry is never the protocol
		{"", false, ""},
	}
	var e Extractor
	for _, tt := range tests {
		e.Reset()
		offered := e.ProtocolHeader([]byte(tt.value), "wsedge.v1.json")
		tok, _ := e.Token()
		if offered != tt.offered || string(tok) != tt.tok {
			t.Errorf("ProtocolHeader(%q) = %v, token %q; want %v, %q", tt.value, offered, tok, tt.offered, tt.tok)
		}
	}
}

func TestExtractorAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var e Extractor
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
	uri := []byte("/ws?token=" + tok)
	auth := []byte("Bearer " + tok)
	proto := []byte("token." + tok)
	header := []byte("wsedge.v1.json, token." + tok)
	run := func() {
		e.Reset()
		e.URI(uri)
		if !e.ProtocolHeader(header, "wsedge.v1.json") {
			t.Fatal("protocol not offered")
		}
		e.Subprotocol(proto)
		e.Header([]byte("Authorization"), auth)
		if got, _ := e.Token(); string(got) != tok {
			t.Fatalf("token %q", got)
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("an extraction allocates %v times, want 0", n)
	}
}
