package broker

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wsedge/wsedge/broker/redistest"
)

// BenchmarkRedisPublishScript measures, side by side on one redis-server,
// the publish script and the same script without its replication-ID check
// (the INFO replication call that starts a new epoch after a failover):
// Redis's own time per call (redis-µs/publish, from INFO commandstats) and
// the client's round trip (ns/op).
func BenchmarkRedisPublishScript(b *testing.B) {
	srv := redistest.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	unfenced := strings.Replace(publishLua, "local rid = replid()", "local rid = 'fixed'", 1)
	if unfenced == publishLua {
		b.Fatal("the publish script no longer calls replid()")
	}
	data := strings.Repeat("x", 64)
	for _, v := range []struct {
		name   string
		script *redis.Script
	}{{"fenced", publishScript}, {"unfenced", redis.NewScript(unfenced)}} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			keys := []string{"{b}:m:" + v.name, "{b}:h:" + v.name}
			if err := v.script.Run(ctx, c, keys, data, 1000, 60000, "e1", "{b}:c", "spublish").Err(); err != nil {
				b.Fatal(err)
			}
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if err := v.script.Run(ctx, c, keys, data, 1000, 60000, "e1", "{b}:c", "spublish").Err(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			info, err := c.Info(ctx, "commandstats").Result()
			if err != nil {
				b.Fatal(err)
			}
			_, rest, ok := strings.Cut(info, "cmdstat_evalsha:")
			_, rest, ok2 := strings.Cut(rest, "usec_per_call=")
			if !ok || !ok2 {
				b.Fatalf("no evalsha in %q", info)
			}
			us, err := strconv.ParseFloat(rest[:strings.IndexByte(rest, ',')], 64)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(us, "redis-µs/publish")
		})
	}
}
