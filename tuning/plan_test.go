package tuning

import (
	"math"
	"strings"
	"testing"
)

func TestPlanFixed(t *testing.T) {
	in := DefaultPlanInput()
	in.Conns, in.PublishRate, in.AvgFanout, in.Payload = 1000000, 5000, 200, 256
	p := MakePlan(in, DefaultCosts())
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("deliveries/s", p.DeliveriesPerSec, 1e6)
	near("heartbeats/s", p.PingsPerSec, 40000)
	near("busy cores", p.CoresSteady, 1e6*8.3e-6+40000*8e-6) // 8.62
	if p.Cores != 15 {                                       // 8.62 / 0.6
		t.Errorf("cores %d, want 15", p.Cores)
	}
	near("reconnect cores", p.StormCores, 1e5*37e-6)
	if p.ProcessBytes != baseRSS+768000000 || p.KernelBytes != 5300000000 {
		t.Errorf("process %d kernel %d", p.ProcessBytes, p.KernelBytes)
	}
	if p.OutboundBytes != 10000*(2*(256<<10)+(1<<20)) {
		t.Errorf("outbound %d", p.OutboundBytes)
	}
	if p.FDs != 1000000+100+3*15 || p.PortPairs != 16 {
		t.Errorf("fds %d, port pairs %d", p.FDs, p.PortPairs)
	}
	// 256 B + 33 envelope + 16 channel + 4 header + 52 TCP/IP per delivery.
	near("egress", p.EgressBps, 8*(1e6*361+40000*float64(pingWire)/2))
	var b strings.Builder
	p.WriteText(&b)
	for _, want := range []string{"cores        15", "assumptions:", "5300 B per idle connection"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("plan text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestCostsFromBench(t *testing.T) {
	c := DefaultCosts()
	idle := `{"mode":"idle","conns":19000,"server":{"rss_per_conn_bytes":700,"cpu_percent":3}}`
	bc := `{"mode":"broadcast","conns":10001,"msg_per_sec":100000,"server":{"rss_per_conn_bytes":1000,"cpu_percent":50}}`
	if err := c.FromBench(strings.NewReader(idle), "idle.json"); err != nil {
		t.Fatal(err)
	}
	if err := c.FromBench(strings.NewReader(bc), "bc.json"); err != nil {
		t.Fatal(err)
	}
	if c.ProcessBytesPerConn != 700 || c.CPUPerDelivery != 5e-6 || c.KernelBytesPerConn != 5300 {
		t.Fatalf("%+v", c)
	}
	if len(c.Sources) != 3 || !strings.HasPrefix(c.Sources[0], "the rest: ") {
		t.Fatalf("sources %q", c.Sources)
	}
	for name, bad := range map[string]string{
		"no server": `{"mode":"idle","conns":5}`,
		"echo":      `{"mode":"echo","server":{"rss_per_conn_bytes":1}}`,
		"not json":  `{"mode":`,
	} {
		if err := c.FromBench(strings.NewReader(bad), name); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
