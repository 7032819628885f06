package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/safety"
)

// Contact is an account this client knows by username.
type Contact struct {
	Username string
	Account  e2ee.AccountID
}

// AddContact looks username up in the directory, verifies the account's chain (it must claim the name
// itself) and keeps it as a contact.
func (c *Client) AddContact(ctx context.Context, username string) (Contact, error) {
	name := strings.ToLower(strings.TrimSpace(username))
	if !e2ee.ValidUsername(name) {
		return Contact{}, fmt.Errorf("client: %q is not a valid username (a-z, 0-9, '.', '_', '-')", username)
	}
	st, err := c.accts.byUsername(ctx, name)
	if err != nil {
		return Contact{}, err
	}
	if err := c.st.Put(bucketContacts, name, []byte(st.Account.String())); err != nil {
		return Contact{}, err
	}
	return Contact{Username: name, Account: st.Account}, nil
}

// Contacts returns the contacts in username order.
func (c *Client) Contacts() []Contact {
	var out []Contact
	for _, name := range c.st.Keys(bucketContacts) {
		v, _ := c.st.Get(bucketContacts, name)
		if a, ok := parseAccountHex(string(v)); ok {
			out = append(out, Contact{Username: name, Account: a})
		}
	}
	return out
}

// resolve turns a username (a contact, or looked up and added) or a hex account ID into an account ID.
func (c *Client) resolve(ctx context.Context, who string) (e2ee.AccountID, error) {
	if a, ok := parseAccountHex(who); ok {
		return a, nil
	}
	name := strings.ToLower(strings.TrimSpace(who))
	if v, ok := c.st.Get(bucketContacts, name); ok {
		if a, ok := parseAccountHex(string(v)); ok {
			return a, nil
		}
	}
	ct, err := c.AddContact(ctx, name)
	if err != nil {
		return e2ee.AccountID{}, err
	}
	return ct.Account, nil
}

// StartDirect returns the 1:1 conversation with who (a username or a hex account ID), creating it locally if
// needed. Both sides derive the same conversation ID, so no handshake is needed.
func (c *Client) StartDirect(ctx context.Context, who string) (Conversation, error) {
	peer, err := c.resolve(ctx, who)
	if err != nil {
		return Conversation{}, err
	}
	if peer == c.eng.self {
		return Conversation{}, errors.New("client: a direct conversation needs another account")
	}
	if _, err := c.accts.get(ctx, peer, false); err != nil {
		return Conversation{}, err
	}
	id := DirectConversationID(c.eng.self, peer)
	if err := c.eng.ensureConv(id, &convRecord{Kind: Direct, Peer: peer[:]}); err != nil {
		return Conversation{}, err
	}
	return c.eng.conversation(id)
}

// Conversations returns every conversation this client knows (the self conversation excluded).
func (c *Client) Conversations() []Conversation {
	var out []Conversation
	for _, k := range c.st.Keys(bucketConvs) {
		id, err := e2ee.ParseConversationID(k)
		if err != nil {
			continue
		}
		cv, err := c.eng.conversation(id)
		if err != nil || cv.Kind == Self {
			continue
		}
		out = append(out, cv)
	}
	return out
}

// Conversation returns one conversation.
func (c *Client) Conversation(id e2ee.ConversationID) (Conversation, error) {
	return c.eng.conversation(id)
}

// ErrTooLarge means a message or attachment is over the SDK's limit (MaxTextBytes, MaxAttachmentBytes); it is
// refused before anything is sent.
var ErrTooLarge = errors.New("client: too large")

// SendText sends a text message and returns its number. It returns once the grid has reported on every
// recipient device (delivered, stored in a mailbox, or failed); the statuses arrive as a DeliveryEvent.
func (c *Client) SendText(ctx context.Context, conv e2ee.ConversationID, text string) (uint64, error) {
	if text == "" {
		return 0, errors.New("client: empty message")
	}
	if len(text) > MaxTextBytes {
		return 0, fmt.Errorf("%w: message of %d bytes over the %d-byte limit", ErrTooLarge, len(text), MaxTextBytes)
	}
	return c.eng.send(ctx, conv, &payload{Type: PayloadText, Text: text}, sendOpts{})
}

// SendAttachment sends a file of at most MaxAttachmentBytes, encrypted like any message (over the grid's
// envelope limit, in fragments the receiving client reassembles). A larger one is refused with ErrTooLarge.
func (c *Client) SendAttachment(ctx context.Context, conv e2ee.ConversationID, a Attachment) (uint64, error) {
	if len(a.Data) > MaxAttachmentBytes {
		return 0, fmt.Errorf("%w: attachment of %d bytes over the %d-byte limit", ErrTooLarge, len(a.Data), MaxAttachmentBytes)
	}
	return c.eng.send(ctx, conv, &payload{Type: PayloadAttachment, Attachment: &attachmentBody{Name: a.Name, MIME: a.MIME, Data: a.Data}}, sendOpts{})
}

// Messages returns a conversation's history in its causal order (CompareMessages): the same order on every
// device that holds the same messages, each message after every one its sender had received.
func (c *Client) Messages(conv e2ee.ConversationID) ([]Message, error) { return c.eng.messages(conv) }

// SafetyNumber returns the conversation's current safety number (digits and QR payload), computed from every
// member's devices as the verified directory states them now.
func (c *Client) SafetyNumber(ctx context.Context, conv e2ee.ConversationID) (*safety.Number, error) {
	r, ok := c.eng.conv(conv)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownConversation, conv)
	}
	members, err := c.eng.memberAccounts(conv, r)
	if err != nil {
		return nil, err
	}
	states, err := c.eng.memberStates(ctx, members, true)
	if err != nil {
		return nil, err
	}
	n, err := c.eng.safetyNumber(states)
	if err != nil {
		return nil, err
	}
	c.eng.recordSafety(conv, n)
	return n, nil
}

// VerifySafetyNumber compares a safety-number QR payload scanned from the other side with this side's number.
func (c *Client) VerifySafetyNumber(ctx context.Context, conv e2ee.ConversationID, scanned []byte) (bool, error) {
	n, err := c.SafetyNumber(ctx, conv)
	if err != nil {
		return false, err
	}
	return safety.Compare(scanned, n)
}

// --- groups --------------------------------------------------------------------------------------------

// CreateGroup creates a group with this account as its admin and the given members (usernames or hex
// account IDs), and announces it to every member device.
func (c *Client) CreateGroup(ctx context.Context, name string, members ...string) (Conversation, error) {
	id, err := e2ee.NewConversationID()
	if err != nil {
		return Conversation{}, err
	}
	accts := []e2ee.AccountID{c.eng.self}
	for _, m := range members {
		a, err := c.resolve(ctx, m)
		if err != nil {
			return Conversation{}, err
		}
		accts = append(accts, a)
	}
	slices.SortFunc(accts, cmpAccount)
	accts = slices.Compact(accts)
	g := &GroupState{Conversation: id, Version: 1, Name: name, Members: accts, Admins: []e2ee.AccountID{c.eng.self},
		Signer: c.eng.self, Time: c.cfg.Now().UTC()}
	rec, err := c.cd.signGroupState(c.dev, g)
	if err != nil {
		return Conversation{}, err
	}
	if err := c.eng.ensureConv(id, &convRecord{Kind: Group, Group: rec}); err != nil {
		return Conversation{}, err
	}
	if _, err := c.eng.send(ctx, id, &payload{Type: PayloadGroupState, Group: rec}, sendOpts{}); err != nil {
		return Conversation{}, err
	}
	return c.eng.conversation(id)
}

// changeGroup makes, signs and applies the next group state, then announces it (in a new session, since the
// membership changed).
func (c *Client) changeGroup(ctx context.Context, conv e2ee.ConversationID, change func(g *GroupState) error) error {
	c.eng.mu.Lock()
	r, ok := c.eng.conv(conv)
	if !ok || r.Kind != Group {
		c.eng.mu.Unlock()
		return fmt.Errorf("%w: %s is not a group", ErrUnknownConversation, conv)
	}
	cur, _, _, err := c.cd.decodeGroupState(r.Group)
	if err != nil {
		c.eng.mu.Unlock()
		return err
	}
	if !cur.IsAdmin(c.eng.self) {
		c.eng.mu.Unlock()
		return fmt.Errorf("%w: this account cannot change group %q", ErrNotAdmin, cur.Name)
	}
	next := *cur
	next.Members, next.Admins = slices.Clone(cur.Members), slices.Clone(cur.Admins)
	if err := change(&next); err != nil {
		c.eng.mu.Unlock()
		return err
	}
	slices.SortFunc(next.Members, cmpAccount)
	slices.SortFunc(next.Admins, cmpAccount)
	next.Members, next.Admins = slices.Compact(next.Members), slices.Compact(next.Admins)
	prev, err := c.cd.groupHash(r.Group)
	if err != nil {
		c.eng.mu.Unlock()
		return fmt.Errorf("client: stored group state: %w", err)
	}
	next.Version, next.Prev, next.Signer, next.Time = cur.Version+1, prev, c.eng.self, c.cfg.Now().UTC()
	rec, err := c.cd.signGroupState(c.dev, &next)
	if err != nil {
		c.eng.mu.Unlock()
		return err
	}
	r.Group = rec
	err = c.st.Update(func(b *store.Batch) error { return c.eng.putConv(b, conv, r) })
	c.eng.mu.Unlock()
	if err != nil {
		return err
	}
	if !next.IsMember(c.eng.self) {
		return nil
	}
	_, err = c.eng.send(ctx, conv, &payload{Type: PayloadGroupState, Group: rec}, sendOpts{})
	return err
}

// AddMember adds who (a username or hex account ID) to a group. Only admins may.
func (c *Client) AddMember(ctx context.Context, conv e2ee.ConversationID, who string) error {
	a, err := c.resolve(ctx, who)
	if err != nil {
		return err
	}
	return c.changeGroup(ctx, conv, func(g *GroupState) error {
		if g.IsMember(a) {
			return fmt.Errorf("client: %s is already a member", who)
		}
		if len(g.Members) >= MaxGroupMembers {
			return fmt.Errorf("client: group is full (%d members)", MaxGroupMembers)
		}
		g.Members = append(g.Members, a)
		return nil
	})
}

// RemoveMember removes who from a group (and from its admins). Only admins may. Every member's next message
// starts a new session without the removed member's devices.
func (c *Client) RemoveMember(ctx context.Context, conv e2ee.ConversationID, who string) error {
	a, err := c.resolve(ctx, who)
	if err != nil {
		return err
	}
	return c.changeGroup(ctx, conv, func(g *GroupState) error {
		if !g.IsMember(a) {
			return fmt.Errorf("client: %s is not a member", who)
		}
		g.Members = slices.DeleteFunc(g.Members, func(m e2ee.AccountID) bool { return m == a })
		g.Admins = slices.DeleteFunc(g.Admins, func(m e2ee.AccountID) bool { return m == a })
		if len(g.Admins) == 0 {
			return errors.New("client: a group needs at least one admin")
		}
		return nil
	})
}

// SetAdmin grants (or with admin=false revokes) who's admin rights in a group. Only admins may.
func (c *Client) SetAdmin(ctx context.Context, conv e2ee.ConversationID, who string, admin bool) error {
	a, err := c.resolve(ctx, who)
	if err != nil {
		return err
	}
	return c.changeGroup(ctx, conv, func(g *GroupState) error {
		if !g.IsMember(a) {
			return fmt.Errorf("client: %s is not a member", who)
		}
		g.Admins = slices.DeleteFunc(g.Admins, func(m e2ee.AccountID) bool { return m == a })
		if admin {
			g.Admins = append(g.Admins, a)
		}
		if len(g.Admins) == 0 {
			return errors.New("client: a group needs at least one admin")
		}
		return nil
	})
}
