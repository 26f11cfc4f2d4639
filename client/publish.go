package client

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/wsedge/wsedge/protocol"
)

// Publish publishes data (one JSON value) on channel and returns the
// publication's position once the server acknowledged it ({} on a channel
// without history). While the client is disconnected the publish waits in
// the offline queue (bounded: ErrQueueFull over it) and goes out, in the
// order of the calls, after the next connection's subscriptions. The wait
// for the reply, queue included, is bounded by ctx and the command
// timeout. A publish is sent at most once: if its connection ends before
// the reply, Publish returns ErrConnectionLost and the application decides
// whether to publish again.
func (c *Client) Publish(ctx context.Context, channel string, data []byte) (Position, error) {
	if _, _, err := protocol.ParseChannel([]byte(channel)); err != nil {
		return Position{}, errors.Join(ErrBadChannel, err)
	}
	if !json.Valid(data) {
		return Position{}, ErrBadData
	}
	ch := make(chan struct {
		r   *reply
		err error
	}, 1)
	k := c.newCall(&protocol.Command{Op: protocol.OpPublish, Channel: []byte(channel), Data: data}, func(r *reply, err error) {
		ch <- struct {
			r   *reply
			err error
		}{r, err}
	})
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return Position{}, ErrClosed
	}
	cn := c.cur
	if cn == nil {
		switch {
		case c.o.queueSize == 0:
			c.mu.Unlock()
			return Position{}, ErrOffline
		case len(c.queue) >= c.o.queueSize:
			c.mu.Unlock()
			return Position{}, ErrQueueFull
		}
	}
	c.queue = append(c.queue, k)
	c.mu.Unlock()
	if cn != nil {
		c.flush(cn)
	}
	r, err := c.await(ctx, k, ch)
	if err != nil {
		return Position{}, err
	}
	var res result
	if len(r.result) > 0 {
		if err := json.Unmarshal(r.result, &res); err != nil {
			return Position{}, errorf("publish result: %w", err)
		}
	}
	return Position{Offset: res.Offset, Epoch: res.Epoch}, nil
}

// flush writes the offline queue on cn, oldest first. Flushers take turns
// on cn.fmu so that the order of the queue is the order on the wire.
func (c *Client) flush(cn *wsConn) {
	cn.fmu.Lock()
	defer cn.fmu.Unlock()
	for {
		c.mu.Lock()
		if c.cur != cn || len(c.queue) == 0 || cn.calls == nil {
			c.mu.Unlock()
			return
		}
		k := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		cn.calls[k.id] = k
		k.cn = cn
		c.mu.Unlock()
		if cn.write(k.msg, c.o.commandTimeout) != nil {
			return // k fails with ErrConnectionLost when cn is forgotten
		}
	}
}
