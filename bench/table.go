package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// WriteTable writes a markdown table comparing servers side by side: one
// row per Label (the server), one column per kind of run, followed by the
// machine, the dates and every command. Results are matched to columns by
// mode and shape: idle runs by connection count, echo runs by paced or
// closed loop.
func WriteTable(w io.Writer, rs []*Result) error {
	if len(rs) == 0 {
		return fmt.Errorf("bench: no results for a table")
	}
	type colKey struct {
		mode   Mode
		conns  int
		closed bool
	}
	var rows []string
	seenRow := map[string]bool{}
	cells := map[string]map[colKey]*Result{}
	cols := map[colKey]bool{}
	for _, r := range rs {
		row := r.Label
		if row == "" {
			row = "?"
		}
		if !seenRow[row] {
			seenRow[row] = true
			rows = append(rows, row)
			cells[row] = map[colKey]*Result{}
		}
		k := colKey{mode: r.Mode}
		switch r.Mode {
		case ModeIdle, ModeBroadcast:
			k.conns = r.Conns
		case ModeEcho:
			k.closed = r.Rate == 0
		}
		cells[row][k] = r
		cols[k] = true
	}
	order := map[Mode]int{ModeIdle: 0, ModeEcho: 1, ModeBroadcast: 2, ModeConnect: 3}
	var keys []colKey
	for k := range cols {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if order[a.mode] != order[b.mode] {
			return order[a.mode] < order[b.mode]
		}
		if a.conns != b.conns {
			return a.conns < b.conns
		}
		return !a.closed && b.closed
	})
	header := func(k colKey, r *Result) string {
		switch {
		case k.mode == ModeIdle:
			return fmt.Sprintf("RSS / idle conn @ %s", kilo(k.conns))
		case k.mode == ModeEcho && k.closed:
			return fmt.Sprintf("closed-loop echo msg/s (%d conns × %d B)", r.Conns, r.Size)
		case k.mode == ModeEcho:
			return fmt.Sprintf("echo p50 / p99 / p99.9 (%s conns × %g/s × %s)", kilo(r.Conns), r.Rate, sizeName(r.Size))
		case k.mode == ModeBroadcast:
			return fmt.Sprintf("broadcast p99 (%s subs × %g/s × %d B), missing", kilo(r.Conns), r.Rate, r.Size)
		default:
			return fmt.Sprintf("handshakes/s (%d in flight)", r.Conns)
		}
	}
	// The thread/goroutine column comes from the largest idle run.
	var threadsKey *colKey
	for i := range keys {
		if keys[i].mode == ModeIdle {
			threadsKey = &keys[i]
		}
	}
	var hdrs []string
	for _, k := range keys {
		var sample *Result
		for _, row := range rows {
			if r := cells[row][k]; r != nil {
				sample = r
				break
			}
		}
		hdrs = append(hdrs, header(k, sample))
		if threadsKey != nil && k == *threadsKey {
			hdrs = append(hdrs, fmt.Sprintf("threads / goroutines @ %s idle", kilo(k.conns)))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| server | %s |\n|---|%s\n", strings.Join(hdrs, " | "), strings.Repeat("---|", len(hdrs)))
	for _, row := range rows {
		var cs []string
		for _, k := range keys {
			r := cells[row][k]
			cs = append(cs, cell(k.mode, k.closed, r))
			if threadsKey != nil && k == *threadsKey {
				cs = append(cs, threadsCell(r))
			}
		}
		fmt.Fprintf(&b, "| %s | %s |\n", row, strings.Join(cs, " | "))
	}
	m := rs[0].Machine
	first, last := rs[0].Date, rs[0].Date
	for _, r := range rs {
		if r.Date.Before(first) {
			first = r.Date
		}
		if r.Date.After(last) {
			last = r.Date
		}
	}
	fmt.Fprintf(&b, "\nMachine: %s. Runs from %s to %s UTC.\n", m, first.UTC().Format("2006-01-02 15:04"), last.UTC().Format("15:04"))
	fmt.Fprintf(&b, "\nFailures and client health per run (a figure is only valid if these are clean):\n\n")
	for _, r := range rs {
		s := r.Stats
		srv := ""
		if r.Server != nil {
			srv = fmt.Sprintf(", server CPU %.0f%%", r.Server.CPU)
		}
		fmt.Fprintf(&b, "- %s %s: connected %d, failed %d, dropped %d, errors %d, missing %d%s; client CPU %.0f%%, lag p99 %s, RSS/conn %s\n",
			r.Label, runName(r), s.Connected, s.ConnectFailed, s.Dropped, s.Errors, r.Missing, srv, r.ClientCPU, fmtUs(r.ClientLag.P99), fmtBytes(r.ClientRSSPerConn))
	}
	fmt.Fprintf(&b, "\nCommands:\n\n```\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "%s   # %s\n", r.Command, r.Label)
	}
	b.WriteString("```\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func runName(r *Result) string {
	switch r.Mode {
	case ModeIdle:
		return "idle " + kilo(r.Conns)
	case ModeEcho:
		if r.Rate == 0 {
			return "echo closed loop"
		}
		return "echo " + kilo(r.Conns)
	case ModeBroadcast:
		return "broadcast " + kilo(r.Conns)
	}
	return string(r.Mode)
}

func cell(mode Mode, closed bool, r *Result) string {
	if r == nil {
		return "—"
	}
	bad := ""
	if r.Stats.ConnectFailed > 0 || r.Stats.Dropped > 0 || r.Stats.Errors > 0 {
		bad = fmt.Sprintf(" ⚠ %d failed, %d dropped, %d errors", r.Stats.ConnectFailed, r.Stats.Dropped, r.Stats.Errors)
	}
	switch {
	case mode == ModeIdle:
		if r.Server == nil {
			return "n/a" + bad
		}
		return fmtBytes(r.Server.RSSPerConn) + bad
	case mode == ModeEcho && closed:
		return fmt.Sprintf("%.0f", r.MsgPerSec) + bad
	case mode == ModeEcho:
		return fmt.Sprintf("%s / %s / %s", fmtUs(r.Latency.P50), fmtUs(r.Latency.P99), fmtUs(r.Latency.P999)) + bad
	case mode == ModeBroadcast:
		if r.Latency.Count == 0 {
			return fmt.Sprintf("no deliveries (%d published, %d subscribed)", r.Published, r.Stats.Subscribed) + bad
		}
		return fmt.Sprintf("%s, %d missing", fmtUs(r.Latency.P99), r.Missing) + bad
	default:
		return fmt.Sprintf("%.0f", r.HandshakesPerSec) + bad
	}
}

func threadsCell(r *Result) string {
	if r == nil || r.Server == nil {
		return "—"
	}
	g := "n/a"
	if r.Server.Goroutines >= 0 {
		g = fmt.Sprint(r.Server.Goroutines)
	}
	return fmt.Sprintf("%d / %s", r.Server.Threads, g)
}

func kilo(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}
