package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"gopkg.in/yaml.v3"

	"github.com/wsedge/wsedge/broker/redistest"
)

// liveSeries scrapes /metrics: every series as written, and the set of
// names.
func liveSeries(t *testing.T, admin string) (series []string, names map[string]bool) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names = map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s := line[:strings.LastIndexByte(line, ' ')]
		series = append(series, s)
		name, _, _ := strings.Cut(s, "{")
		names[name] = true
	}
	return series, names
}

var (
	metricRef = regexp.MustCompile(`\b((?:wsedge|process|go)_[a-z0-9_]+)(\{([^}]*)\})?`)
	matcherRE = regexp.MustCompile(`([a-z_]+)\s*=\s*"([^"$]*)"`)
)

// TestGrafanaDashboard: every metric deploy/grafana/wsedge.json queries
// exists in the /metrics of a live node (with Redis, after one
// connection), and so does every label value it selects.
func TestGrafanaDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and a node")
	}
	b, err := os.ReadFile("../../deploy/grafana/wsedge.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	p := startServe(t, "", "--broker", rs.URL())
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+p.ws+"/ws?x", http.Header{"Sec-WebSocket-Protocol": {"wsedge.v1.json"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var series []string
	var names map[string]bool
	deadline := time.Now().Add(10 * time.Second)
	for {
		series, names = liveSeries(t, p.admin)
		if names["wsedge_loop_connections"] || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	checked := 0
	for _, panel := range dash.Panels {
		for _, tg := range panel.Targets {
			refs := metricRef.FindAllStringSubmatch(tg.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("%s: no metric in %q", panel.Title, tg.Expr)
			}
			for _, ref := range refs {
				checked++
				name := ref[1]
				if !names[name] {
					t.Errorf("%s: %s is not in a live /metrics", panel.Title, name)
					continue
				}
				for _, m := range matcherRE.FindAllStringSubmatch(ref[3], -1) {
					pair := m[1] + `="` + m[2] + `"`
					found := false
					for _, s := range series {
						if strings.HasPrefix(s, name+"{") && strings.Contains(s, pair) {
							found = true
							break
						}
					}
					if !found {
						t.Errorf("%s: no %s series with %s", panel.Title, name, pair)
					}
				}
			}
		}
	}
	if checked < 30 {
		t.Fatalf("only %d metric references checked", checked)
	}
}

// k8sDocs reads every YAML document under deploy/k8s.
func k8sDocs(t *testing.T) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob("../../deploy/k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	docs := map[string]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d map[string]any
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			meta, _ := d["metadata"].(map[string]any)
			key := d["kind"].(string) + "/" + meta["name"].(string)
			if docs[key] != nil {
				t.Fatalf("%s twice", key)
			}
			docs[key] = d
		}
	}
	return docs
}

// dig walks maps and lists: dig(d, "spec", "template", 0, …).
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map at %q", path, k)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no element %d", path, k)
			}
			v = l[k]
		}
	}
	return v
}

func seconds(t *testing.T, s string) float64 {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d.Seconds()
}

// TestK8sManifests: deploy/k8s parses; the Deployment's flags exist in
// `wsedge serve`, its ports are the ones the flags listen on, the probes
// hit /readyz and /healthz on the admin port, terminationGracePeriodSeconds
// outlasts preStop + --drain-grace + --close-timeout, the Services target
// named container ports, the PDB and HPA select the Deployment, and the
// HPA's metric exists in a live /metrics.
func TestK8sManifests(t *testing.T) {
	docs := k8sDocs(t)
	dep := docs["Deployment/wsedge"]
	for _, k := range []string{"Service/wsedge", "Service/wsedge-admin", "PodDisruptionBudget/wsedge", "HorizontalPodAutoscaler/wsedge", "ConfigMap/wsedge-adapter-rules"} {
		if docs[k] == nil {
			t.Fatalf("no %s", k)
		}
	}
	if dep == nil {
		t.Fatal("no Deployment/wsedge")
	}
	podLabels := dig(t, dep, "spec", "template", "metadata", "labels").(map[string]any)
	c := dig(t, dep, "spec", "template", "spec", "containers", 0)
	args := dig(t, c, "args").([]any)
	flags := map[string]string{}
	help, _ := exec.Command(binPath, "serve", "--help").CombinedOutput()
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a.(string), "=")
		if !bytes.Contains(help, []byte("  -"+strings.TrimPrefix(k, "--")+" ")) {
			t.Errorf("serve has no flag %s", k)
		}
		flags[k] = v
	}
	ports := map[string]int{}
	for _, p := range dig(t, c, "ports").([]any) {
		pm := p.(map[string]any)
		ports[pm["name"].(string)] = pm["containerPort"].(int)
	}
	for name, flag := range map[string]string{"ws": "--listen", "admin": "--admin"} {
		_, port, _ := strings.Cut(flags[flag], ":")
		if n, _ := strconv.Atoi(port); n == 0 || n != ports[name] {
			t.Errorf("%s listens on %q, container port %s is %d", flag, flags[flag], name, ports[name])
		}
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := dig(t, c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %v", probe, got)
		}
		if got := dig(t, c, probe, "httpGet", "port"); got != "admin" {
			t.Errorf("%s port %v, want admin", probe, got)
		}
	}
	pre := dig(t, c, "lifecycle", "preStop", "sleep", "seconds").(int)
	tgps := dig(t, dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	need := float64(pre) + seconds(t, flags["--drain-grace"]) + seconds(t, flags["--close-timeout"]) + 6
	if float64(tgps) < need || float64(tgps) > need+30 {
		t.Errorf("terminationGracePeriodSeconds %d; preStop %d s + drain %s + close %s + 6 s to stop = %.0f s",
			tgps, pre, flags["--drain-grace"], flags["--close-timeout"], need)
	}
	for svc, port := range map[string]string{"Service/wsedge": "ws", "Service/wsedge-admin": "admin"} {
		if got := dig(t, docs[svc], "spec", "ports", 0, "targetPort"); got != port {
			t.Errorf("%s targets %v, want %s", svc, got, port)
		}
		sel := dig(t, docs[svc], "spec", "selector").(map[string]any)
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%v, pods have %v", svc, k, v, podLabels[k])
			}
		}
	}
	pdbSel := dig(t, docs["PodDisruptionBudget/wsedge"], "spec", "selector", "matchLabels").(map[string]any)
	for k, v := range pdbSel {
		if podLabels[k] != v {
			t.Errorf("PDB selects %s=%v, pods have %v", k, v, podLabels[k])
		}
	}
	hpa := docs["HorizontalPodAutoscaler/wsedge"]
	if got := dig(t, hpa, "spec", "scaleTargetRef", "name"); got != "wsedge" {
		t.Errorf("HPA scales %v", got)
	}
	metric := dig(t, hpa, "spec", "metrics", 0, "pods", "metric", "name").(string)
	rules := dig(t, docs["ConfigMap/wsedge-adapter-rules"], "data", "config.yaml").(string)
	var adapter struct {
		Rules []struct {
			SeriesQuery string `yaml:"seriesQuery"`
			Name        struct{ As string }
		}
	}
	if err := yaml.Unmarshal([]byte(rules), &adapter); err != nil || len(adapter.Rules) == 0 {
		t.Fatalf("adapter rules: %v", err)
	}
	if adapter.Rules[0].Name.As != metric || !strings.HasPrefix(adapter.Rules[0].SeriesQuery, metric+"{") {
		t.Errorf("adapter exposes %q from %q; the HPA reads %q", adapter.Rules[0].Name.As, adapter.Rules[0].SeriesQuery, metric)
	}
	p := startServe(t, "")
	if _, names := liveSeries(t, p.admin); !names[metric] {
		t.Errorf("the HPA's metric %s is not in a live /metrics", metric)
	}
}
