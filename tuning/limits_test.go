package tuning

import "testing"

func TestRaiseNoFile(t *testing.T) {
	l, err := RaiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	if l.NoFileSoft == 0 || l.NoFileSoft > l.NoFileHard {
		t.Fatalf("soft %d, hard %d", l.NoFileSoft, l.NoFileHard)
	}
	if l.NoFileSoft != l.NoFileHard {
		t.Fatalf("soft limit %d not raised to hard %d", l.NoFileSoft, l.NoFileHard)
	}
	if got, want := l.MaxConns(2), int(l.NoFileSoft)-FDReserve-2*FDsPerLoop; got != want {
		t.Fatalf("MaxConns %d, want %d", got, want)
	}
}

func TestMaxConnsSmallLimit(t *testing.T) {
	if n := (Limits{NoFileSoft: 50}).MaxConns(1); n != 0 {
		t.Fatalf("MaxConns with 50 fds = %d, want 0", n)
	}
}
