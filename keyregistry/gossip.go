package keyregistry

import (
	"context"
	"errors"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/iagon/gridchat/e2ee"
)

// joinTopic registers validate for topic, joins it and subscribes; on an
// error it leaves nothing registered or joined.
func joinTopic(ps *pubsub.PubSub, topic string, validate any) (*pubsub.Topic, *pubsub.Subscription, error) {
	if err := ps.RegisterTopicValidator(topic, validate); err != nil {
		return nil, nil, err
	}
	t, err := ps.Join(topic)
	if err != nil {
		_ = ps.UnregisterTopicValidator(topic)
		return nil, nil, err
	}
	sub, err := t.Subscribe()
	if err != nil {
		_ = t.Close()
		_ = ps.UnregisterTopicValidator(topic)
		return nil, nil, err
	}
	return t, sub, nil
}

// validateAnnouncement checks an announcement before gossipsub forwards or
// delivers it: it must be a directory record whose chain replays (else the
// sender is penalised), and must not roll back or fork the cached chain
// (else it is dropped without penalty: the sender may just be behind).
func (s *Service) validateAnnouncement(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if len(msg.Data) > MaxRecordSize {
		s.m.gossip.WithLabelValues("too_large").Inc()
		return pubsub.ValidationReject
	}
	h, err := s.ver.open(msg.Data)
	if err != nil {
		s.m.gossip.WithLabelValues("invalid").Inc()
		return pubsub.ValidationReject
	}
	if old, ok := s.accounts.peek(h.acct.ID); ok {
		switch relate(old, h) {
		case e2ee.RolledBack:
			s.m.gossip.WithLabelValues("rollback").Inc()
			return pubsub.ValidationIgnore
		case e2ee.Forked:
			s.m.gossip.WithLabelValues("fork").Inc()
			return pubsub.ValidationIgnore
		}
	}
	msg.ValidatorData = h
	return pubsub.ValidationAccept
}

// gossipLoop feeds validated announcements into the cache until Close.
func (s *Service) gossipLoop() {
	for {
		msg, err := s.sub.Next(s.ctx)
		if err != nil {
			if !errors.Is(err, context.Canceled) && s.ctx.Err() == nil {
				s.log.Warn("directory topic", "err", err)
			}
			return
		}
		h, ok := msg.ValidatorData.(*held)
		if !ok {
			continue
		}
		s.m.gossip.WithLabelValues("accepted").Inc()
		s.adopt(h, "gossip")
	}
}

// announce publishes h on the directory topic (best effort).
func (s *Service) announce(ctx context.Context, h *held) {
	if s.topic == nil {
		return
	}
	if err := s.topic.Publish(ctx, h.raw); err != nil {
		s.log.Warn("announce", "account", h.acct.ID.String(), "err", err)
	}
}
