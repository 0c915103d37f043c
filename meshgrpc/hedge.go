package meshgrpc

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/core"
)

// A unary call's hedges. A hedge is in flight beside the call's first
// attempt, which uses the call's storage (its pick slot, its contexts, the
// caller's reply, the caller's call options): the hedge gets its own slot,
// context and reply (a new message of the reply's type), and call options
// whose outputs (header, trailer, peer) it writes into storage of its own.
// The winner's, when it is a hedge, is then copied into the caller's
// (hedgeAnswer.apply), after every attempt of the call has ended.
//
// A call is hedged only when that copy is possible: a protobuf reply, and
// no OnFinish option (grpc-go would call it once per attempt).

// hedgeable reports whether a unary call with reply and opts may be
// hedged: its reply can be made anew and copied, and its options can be
// given per attempt.
func hedgeable(reply any, opts []grpc.CallOption) bool {
	if _, ok := reply.(proto.Message); !ok {
		return false
	}
	for _, o := range opts {
		if _, ok := o.(grpc.OnFinishCallOption); ok {
			return false
		}
	}
	return true
}

// hedges are the pick slots of a call's hedges in flight, whose endpoints
// a new hedge avoids, with the call's own slot's.
type hedges struct {
	mu    sync.Mutex
	slots []*pickSlot
}

// hedgeAnswer is a hedge's reply and call option outputs, its outcome's
// Answer.
type hedgeAnswer struct {
	reply   proto.Message
	header  metadata.MD
	trailer metadata.MD
	peer    peer.Peer
}

// sendHedge makes hedge attempt a of the unary call: on a slot of its own,
// which avoids the endpoints of the call's attempts in flight, with a
// reply and call options of its own.
func (c *rpcCall) sendHedge(a *core.Attempt) core.Outcome {
	s := newPickSlot()
	s.reset(a.Pool, c.st.Seq, a.Prev, a.Now)
	s.hash, s.hashed = c.Hash()
	c.hedges.mu.Lock()
	avoid := make([]*discovery.Host, 0, 1+len(c.hedges.slots))
	if h := c.slot.host.Load(); h != nil {
		avoid = append(avoid, h)
	}
	for _, hs := range c.hedges.slots {
		if h := hs.host.Load(); h != nil {
			avoid = append(avoid, h)
		}
	}
	c.hedges.slots = append(c.hedges.slots, s)
	c.hedges.mu.Unlock()
	s.avoid = avoid
	defer func() {
		c.hedges.mu.Lock()
		for i, hs := range c.hedges.slots {
			if hs == s {
				c.hedges.slots = append(c.hedges.slots[:i], c.hedges.slots[i+1:]...)
				break
			}
		}
		c.hedges.mu.Unlock()
	}()

	ans := &hedgeAnswer{reply: c.reply.(proto.Message).ProtoReflect().New().Interface()}
	opts := make([]grpc.CallOption, len(c.opts))
	for i, o := range c.opts {
		switch o.(type) {
		case grpc.HeaderCallOption:
			o = grpc.Header(&ans.header)
		case grpc.TrailerCallOption:
			o = grpc.Trailer(&ans.trailer)
		case grpc.PeerCallOption:
			o = grpc.Peer(&ans.peer)
		}
		opts[i] = o
	}
	err := c.invoker(withPickSlot(a.Ctx, s), c.method, c.req, ans.reply, c.cc, opts...)
	o := c.outcome(a, s, err)
	o.Answer = ans
	return o
}

// apply copies the hedge's answer, which won, into the caller's reply and
// call option outputs. Every attempt of the call has ended: none writes
// into them any more.
func (ans *hedgeAnswer) apply(c *rpcCall) {
	if dst, ok := c.reply.(proto.Message); ok {
		proto.Reset(dst)
		proto.Merge(dst, ans.reply)
	}
	for _, o := range c.opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = ans.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = ans.trailer
		case grpc.PeerCallOption:
			*o.PeerAddr = ans.peer
		}
	}
}
