package tuning

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"
)

// Costs are the per-connection and per-operation costs a plan multiplies.
// Defaults are the figures measured on the project's 2-core VM
// (BENCHMARKS.md); FromBench replaces them with a host's own.
type Costs struct {
	ProcessBytesPerConn float64  `json:"process_bytes_per_conn"` // server RSS per idle connection
	KernelBytesPerConn  float64  `json:"kernel_bytes_per_conn"`  // slab and buffers per idle server-side socket
	CPUPerDelivery      float64  `json:"cpu_s_per_delivery"`     // server CPU seconds per publication frame delivered
	CPUPerPing          float64  `json:"cpu_s_per_ping"`         // server CPU seconds per heartbeat (ping out, pong in)
	CPUPerHandshake     float64  `json:"cpu_s_per_handshake"`    // server CPU seconds per accepted upgrade
	Sources             []string `json:"sources"`
}

// DefaultCosts are the shipped figures (BENCHMARKS.md, 2-core VM,
// loopback): 768 B RSS per idle connection (issue 3, 10,000 connections;
// 686 B at 19,000), ~5.3 KB of kernel slab per idle socket (measured with
// 190,000 idle connections), 8.3 µs of server CPU per delivery (broadcast
// to 10,000 subscribers × 10/s: 100,000 deliveries/s at 83% of a core),
// 37 µs per handshake (18,934 handshakes/s at 71%), and 8 µs per heartbeat
// (one small write and one small read, ~4 µs each on this VM class).
func DefaultCosts() Costs {
	return Costs{
		ProcessBytesPerConn: 768,
		KernelBytesPerConn:  5300,
		CPUPerDelivery:      8.3e-6,
		CPUPerPing:          8e-6,
		CPUPerHandshake:     37e-6,
		Sources:             []string{"BENCHMARKS.md defaults (2-core VM, loopback)"},
	}
}

// benchResult is the part of a `wsedge bench --json` result a plan reads.
type benchResult struct {
	Label            string  `json:"label"`
	Mode             string  `json:"mode"`
	Conns            int     `json:"conns"`
	MsgPerSec        float64 `json:"msg_per_sec"`
	HandshakesPerSec float64 `json:"handshakes_per_sec"`
	Command          string  `json:"command"`
	Server           *struct {
		RSSPerConn float64 `json:"rss_per_conn_bytes"`
		CPU        float64 `json:"cpu_percent"` // of one core, over the measured phase
	} `json:"server"`
}

// MaxBenchJSON bounds a bench result read by CostsFromBench.
const MaxBenchJSON = 16 << 20

// FromBench updates c from a `wsedge bench --json` result: an idle
// run sets the process bytes per connection, a broadcast run the CPU per
// delivery, a connect run the CPU per handshake. Runs without server
// figures (no --server-pid) change nothing and say so.
func (c *Costs) FromBench(r io.Reader, name string) error {
	var b benchResult
	dec := json.NewDecoder(io.LimitReader(r, MaxBenchJSON))
	if err := dec.Decode(&b); err != nil {
		return fmt.Errorf("tuning: %s: %w", name, err)
	}
	if b.Server == nil {
		return fmt.Errorf("tuning: %s: no server figures (run wsedge bench with --server-pid)", name)
	}
	src := fmt.Sprintf("%s: %s run, %d connections", name, b.Mode, b.Conns)
	switch b.Mode {
	case "idle":
		if b.Server.RSSPerConn <= 0 {
			return fmt.Errorf("tuning: %s: idle run without RSS per connection", name)
		}
		c.ProcessBytesPerConn = b.Server.RSSPerConn
		src += fmt.Sprintf(" → %.0f B RSS per connection", b.Server.RSSPerConn)
	case "broadcast":
		if b.MsgPerSec <= 0 || b.Server.CPU <= 0 {
			return fmt.Errorf("tuning: %s: broadcast run without deliveries/s or server CPU", name)
		}
		c.CPUPerDelivery = b.Server.CPU / 100 / b.MsgPerSec
		src += fmt.Sprintf(" → %.2f µs CPU per delivery", c.CPUPerDelivery*1e6)
	case "connect":
		if b.HandshakesPerSec <= 0 || b.Server.CPU <= 0 {
			return fmt.Errorf("tuning: %s: connect run without handshakes/s or server CPU", name)
		}
		c.CPUPerHandshake = b.Server.CPU / 100 / b.HandshakesPerSec
		src += fmt.Sprintf(" → %.1f µs CPU per handshake", c.CPUPerHandshake*1e6)
	default:
		return fmt.Errorf("tuning: %s: mode %q gives no per-connection cost (want idle, broadcast or connect)", name, b.Mode)
	}
	if len(c.Sources) == 1 && c.Sources[0] == DefaultCosts().Sources[0] {
		c.Sources = append([]string{}, "the rest: "+c.Sources[0])
	}
	c.Sources = append(c.Sources, src)
	return nil
}

// PlanInput is the load to plan for.
type PlanInput struct {
	Conns        int64
	PublishRate  float64 // publications per second, node-wide
	AvgFanout    float64 // subscribers reached per publication
	Payload      int     // bytes of publication data
	ChannelLen   int     // typical channel name length
	PingInterval time.Duration
	DrainGrace   time.Duration // a drained node's clients reconnect over this
	MaxOutbound  int64         // --max-outbound-bytes
	SlowFraction float64       // share of connections assumed stalled at once
	SendBufMax   int64         // kernel send buffer a stalled socket can fill (tcp_wmem max or --socket-send-buffer)
	PortsPerPair int64         // usable ephemeral ports per (proxy address, backend address)
	Loops        int
	Utilisation  float64 // CPU share to plan up to, leaving headroom
}

// DefaultPlanInput fills what the user did not give.
func DefaultPlanInput() PlanInput {
	return PlanInput{
		ChannelLen: 16, PingInterval: 25 * time.Second, DrainGrace: 10 * time.Second,
		MaxOutbound: 256 << 10, SlowFraction: 0.01, SendBufMax: 1 << 20,
		PortsPerPair: 65535 - 1024 + 1, Loops: 0, Utilisation: 0.6,
	}
}

// Plan is a capacity estimate and what it assumed.
type Plan struct {
	Input PlanInput `json:"input"`
	Costs Costs     `json:"costs"`

	DeliveriesPerSec float64  `json:"deliveries_per_sec"`
	PingsPerSec      float64  `json:"pings_per_sec"`
	CoresSteady      float64  `json:"cores_steady"`       // CPU used at the given load
	Cores            int      `json:"cores"`              // to provision, at the utilisation target
	StormCores       float64  `json:"reconnect_cores"`    // extra while a drained node's clients reconnect here
	ProcessBytes     int64    `json:"process_bytes"`      // RSS for the idle connections (plus the base)
	KernelBytes      int64    `json:"kernel_bytes"`       // kernel memory for their sockets
	OutboundBytes    int64    `json:"outbound_bytes"`     // queues and send buffers of stalled clients
	MemoryBytes      int64    `json:"memory_bytes"`       // the sum
	MemoryLimit      int64    `json:"memory_limit_bytes"` // to give the cgroup/host (sum / 0.8)
	FDs              int64    `json:"fds"`                // RLIMIT_NOFILE to set
	PortPairs        int64    `json:"lb_port_pairs"`      // (proxy address, backend address) pairs the proxy tier needs
	EgressBps        float64  `json:"egress_bits_per_sec"`
	IngressBps       float64  `json:"ingress_bits_per_sec"`
	Assumptions      []string `json:"assumptions"`
}

// Wire overheads per frame: the JSON around the data
// ({"channel":…,"offset":…,"data":…}), the WebSocket header, TCP/IP with
// timestamps when the frame leaves in a segment of its own.
const (
	pushEnvelope = 33
	tcpOverhead  = 52
	pingWire     = 2*(2+11) + 6 + 3*tcpOverhead // app ping push + ping out, pong in, and their segments/acks
)

// MakePlan computes the plan.
func MakePlan(in PlanInput, c Costs) Plan {
	p := Plan{Input: in, Costs: c}
	n := float64(in.Conns)
	p.DeliveriesPerSec = in.PublishRate * in.AvgFanout
	if in.PingInterval > 0 {
		p.PingsPerSec = n / in.PingInterval.Seconds()
	}
	p.CoresSteady = p.DeliveriesPerSec*c.CPUPerDelivery + p.PingsPerSec*c.CPUPerPing
	if in.Utilisation <= 0 || in.Utilisation > 1 {
		in.Utilisation = 0.6
	}
	p.Cores = max(1, int(math.Ceil(p.CoresSteady/in.Utilisation)))
	if in.DrainGrace > 0 {
		p.StormCores = n / in.DrainGrace.Seconds() * c.CPUPerHandshake
	}
	p.ProcessBytes = baseRSS + int64(n*c.ProcessBytesPerConn)
	p.KernelBytes = int64(n * c.KernelBytesPerConn)
	slow := math.Ceil(n * in.SlowFraction)
	// A stalled connection holds its queue (≤ max-outbound), one flush
	// copied into gnet's buffer (≤ max-outbound) and a full kernel send
	// buffer.
	p.OutboundBytes = int64(slow * float64(2*in.MaxOutbound+in.SendBufMax))
	p.MemoryBytes = p.ProcessBytes + p.KernelBytes + p.OutboundBytes
	p.MemoryLimit = int64(float64(p.MemoryBytes) / 0.8)
	loops := in.Loops
	if loops <= 0 {
		loops = p.Cores
	}
	p.FDs = in.Conns + FDReserve + int64(FDsPerLoop*loops)
	if in.PortsPerPair > 0 {
		p.PortPairs = (in.Conns + in.PortsPerPair - 1) / in.PortsPerPair
	}
	hdr := 2
	if in.Payload+pushEnvelope+in.ChannelLen >= 126 {
		hdr = 4
	}
	perDelivery := float64(in.Payload + pushEnvelope + in.ChannelLen + hdr + tcpOverhead)
	p.EgressBps = 8 * (p.DeliveriesPerSec*perDelivery + p.PingsPerSec*pingWire/2)
	p.IngressBps = 8 * (p.DeliveriesPerSec*tcpOverhead/2 + p.PingsPerSec*pingWire/2)
	p.Assumptions = []string{
		fmt.Sprintf("costs from %v", c.Sources),
		fmt.Sprintf("process %.0f B and kernel %.0f B per idle connection (the kernel's is not in RSS, but cgroups charge it)", c.ProcessBytesPerConn, c.KernelBytesPerConn),
		fmt.Sprintf("%.2f µs CPU per delivery, %.1f µs per heartbeat, %.1f µs per handshake; CPU planned to %.0f%% utilisation", c.CPUPerDelivery*1e6, c.CPUPerPing*1e6, c.CPUPerHandshake*1e6, in.Utilisation*100),
		"one delivery per TCP segment (no coalescing): the worst case at low per-connection rates; bursts share segments and cost less",
		fmt.Sprintf("a heartbeat every %v per idle connection (--ping-interval)", in.PingInterval),
		fmt.Sprintf("%.1f%% of connections stalled at once, each holding --max-outbound-bytes %d twice (queue + gnet) and a %s kernel send buffer (tcp_wmem max or --socket-send-buffer)", in.SlowFraction*100, in.MaxOutbound, fmtBytes(in.SendBufMax)),
		fmt.Sprintf("a drained node's clients reconnect over --drain-grace %v", in.DrainGrace),
		fmt.Sprintf("%d usable ephemeral ports per (proxy address, backend address) pair (ip_local_port_range of the profile)", in.PortsPerPair),
		"figures from a 2-core VM on loopback; the kernel figure doubles on loopback (both ends local) and is per server socket here",
	}
	return p
}

// WriteText prints the plan.
func (p Plan) WriteText(w io.Writer) {
	in := p.Input
	fmt.Fprintf(w, "plan for %d connections, %.0f publications/s × %.0f subscribers × %d B\n\n", in.Conns, in.PublishRate, in.AvgFanout, in.Payload)
	fmt.Fprintf(w, "cores        %d  (%.2f busy: %.0f deliveries/s, %.0f heartbeats/s; +%.2f while a drained node's clients reconnect)\n",
		p.Cores, p.CoresSteady, p.DeliveriesPerSec, p.PingsPerSec, p.StormCores)
	fmt.Fprintf(w, "memory       %s  (process %s + kernel sockets %s + stalled clients' outbound %s); set the limit to %s\n",
		fmtBytes(p.MemoryBytes), fmtBytes(p.ProcessBytes), fmtBytes(p.KernelBytes), fmtBytes(p.OutboundBytes), fmtBytes(p.MemoryLimit))
	fmt.Fprintf(w, "fds          %d  (RLIMIT_NOFILE hard: LimitNOFILE=%d; fs.nr_open and fs.file-max above it)\n", p.FDs, p.FDs)
	fmt.Fprintf(w, "lb ports     %d (proxy address, backend address) pairs at %d ports each\n", p.PortPairs, in.PortsPerPair)
	fmt.Fprintf(w, "bandwidth    egress %s, ingress %s\n", fmtBits(p.EgressBps), fmtBits(p.IngressBps))
	fmt.Fprintln(w, "\nassumptions:")
	for _, a := range p.Assumptions {
		fmt.Fprintf(w, "  - %s\n", a)
	}
}

func fmtBits(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", b/1e6)
	}
	return fmt.Sprintf("%.0f kbit/s", b/1e3)
}
