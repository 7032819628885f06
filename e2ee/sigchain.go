package e2ee

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// ChainErrorReason says why a sigchain statement was refused. Values are stable codes.
type ChainErrorReason uint8

// Reasons a statement is refused.
const (
	ReasonMalformed        ChainErrorReason = 1  // undecodable, or a body that breaks the field rules
	ReasonBadGenesis       ChainErrorReason = 2  // first statement is not a valid self-signed genesis, or a later one is a genesis
	ReasonBadSequence      ChainErrorReason = 3  // sequence number is not the statement's index
	ReasonBrokenLink       ChainErrorReason = 4  // Prev is not the hash of the previous statement
	ReasonBadTime          ChainErrorReason = 5  // time earlier than the previous statement's
	ReasonSignerNotCurrent ChainErrorReason = 6  // signer was never a device of the account
	ReasonSignerRevoked    ChainErrorReason = 7  // signer was revoked earlier in the chain
	ReasonBadSignature     ChainErrorReason = 8  // signature does not verify under the signer's key
	ReasonBadDeviceCert    ChainErrorReason = 9  // add-device certificate invalid or bound to another account
	ReasonDuplicateDevice  ChainErrorReason = 10 // added device already current or revoked
	ReasonUnknownDevice    ChainErrorReason = 11 // revoked device is not current
	ReasonLastDevice       ChainErrorReason = 12 // revocation would leave no device
	ReasonTooLong          ChainErrorReason = 13 // chain over MaxChainStatements
	ReasonEmpty            ChainErrorReason = 14 // no statements
)

var reasonNames = [...]string{
	ReasonMalformed: "malformed", ReasonBadGenesis: "bad genesis", ReasonBadSequence: "bad sequence number",
	ReasonBrokenLink: "broken hash link", ReasonBadTime: "time goes backwards", ReasonSignerNotCurrent: "signer not a current device",
	ReasonSignerRevoked: "signer revoked", ReasonBadSignature: "bad signature", ReasonBadDeviceCert: "bad device certificate",
	ReasonDuplicateDevice: "device already added", ReasonUnknownDevice: "revoked device not current",
	ReasonLastDevice: "revokes the last device", ReasonTooLong: "chain too long", ReasonEmpty: "empty chain",
}

// String names the reason.
func (r ChainErrorReason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// ChainError names the first refused statement of a sigchain and why.
type ChainError struct {
	Index  int
	Reason ChainErrorReason
	Detail string
}

func (e *ChainError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("e2ee: sigchain statement %d: %s", e.Index, e.Reason)
	}
	return fmt.Sprintf("e2ee: sigchain statement %d: %s: %s", e.Index, e.Reason, e.Detail)
}

// Unwrap maps the reason onto the package's sentinels (ErrBadSignature, ErrRevoked, ErrUnknownSender,
// ErrMalformed), so errors.Is works across all verification code.
func (e *ChainError) Unwrap() error {
	switch e.Reason {
	case ReasonBadSignature, ReasonBadDeviceCert:
		return ErrBadSignature
	case ReasonSignerRevoked:
		return ErrRevoked
	case ReasonSignerNotCurrent:
		return ErrUnknownSender
	default:
		return ErrMalformed
	}
}

func chainErr(i int, r ChainErrorReason, format string, args ...any) *ChainError {
	return &ChainError{Index: i, Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Chain limits.
const (
	MaxChainStatements = 2048
	MaxChainBytes      = 2 << 20
)

// Chain is an account's sigchain. Build one with NewAccount and Append, or decode one with DecodeChain and
// check it with Replay. A Chain is not safe for concurrent mutation.
type Chain struct {
	stmts []*Statement
	state *replayState // state after all statements, once verified by Append
}

// NewAccount starts an account whose first device is dev: a genesis statement signed by dev.
func NewAccount(dev *DeviceKeys, now time.Time) (*Chain, error) {
	c := &Chain{}
	if _, err := c.append(dev, &Genesis{Device: dev.Public()}, now); err != nil {
		return nil, err
	}
	return c, nil
}

// Append signs body as the next statement with signer (which must be a current device of the account) and
// appends it. The chain is verified first if it was decoded rather than built.
func (c *Chain) Append(signer *DeviceKeys, body Body, now time.Time) (*Statement, error) {
	if _, ok := body.(*Genesis); ok || body == nil {
		return nil, chainErr(len(c.stmts), ReasonBadGenesis, "append needs a non-genesis body")
	}
	if len(c.stmts) == 0 {
		return nil, chainErr(0, ReasonEmpty, "")
	}
	return c.append(signer, body, now)
}

func (c *Chain) append(signer *DeviceKeys, body Body, now time.Time) (*Statement, error) {
	if len(c.stmts) >= MaxChainStatements {
		return nil, chainErr(len(c.stmts), ReasonTooLong, "")
	}
	if err := validateBody(body); err != nil {
		return nil, chainErr(len(c.stmts), ReasonMalformed, "%v", err)
	}
	if c.state == nil && len(c.stmts) > 0 {
		st, err := replay(c.stmts)
		if err != nil {
			return nil, err
		}
		c.state = st
	}
	s := &Statement{Kind: body.Kind(), Seq: uint64(len(c.stmts)), Time: now.Truncate(time.Second).UTC(), Signer: signer.ID(), Body: body}
	if c.state != nil {
		s.Prev = c.state.head
	}
	tr, err := s.transcript()
	if err != nil {
		return nil, chainErr(len(c.stmts), ReasonMalformed, "%v", err)
	}
	s.Sig = signer.sign(s.Kind.context(), tr)
	s.raw = append(tr, s.Sig...)
	if len(s.raw) > MaxStatementSize {
		return nil, chainErr(len(c.stmts), ReasonMalformed, "statement of %d bytes over cap", len(s.raw))
	}
	st := c.state
	if st == nil {
		st = &replayState{}
	} else {
		st = st.clone()
	}
	if err := st.apply(len(c.stmts), s); err != nil {
		return nil, err
	}
	c.stmts = append(c.stmts, s)
	c.state = st
	return s, nil
}

// Len returns the number of statements.
func (c *Chain) Len() int { return len(c.stmts) }

// Statements returns the statements in order (the slice is a copy; the statements are shared and must not be
// modified).
func (c *Chain) Statements() []*Statement { return slices.Clone(c.stmts) }

// AccountID returns the account ID (the hash of the genesis statement), or the zero ID for an empty chain.
func (c *Chain) AccountID() AccountID {
	if len(c.stmts) == 0 {
		return AccountID{}
	}
	return AccountID(frame.Hash(labelAccountID, c.stmts[0].raw))
}

// Head returns the hash of the last statement (zero for an empty chain).
func (c *Chain) Head() [32]byte {
	if len(c.stmts) == 0 {
		return [32]byte{}
	}
	return c.stmts[len(c.stmts)-1].Hash()
}

// Encode returns the chain's encoding: tag, version, suite, statement count (uint32), then each statement
// as a uint32-length-prefixed field.
func (c *Chain) Encode() []byte {
	b := frame.NewBuilder(4096)
	putHeader(b, tagChain)
	b.U32(uint32(len(c.stmts)))
	for _, s := range c.stmts {
		b.Var(s.raw)
	}
	out, _ := b.Bytes()
	return out
}

// DecodeChain decodes a chain strictly (caps: MaxChainBytes, MaxChainStatements, MaxStatementSize). It does
// not verify it; call Replay.
func DecodeChain(data []byte) (*Chain, error) {
	const op = "decode chain"
	if len(data) > MaxChainBytes {
		return nil, errorf(op, ErrMalformed, "%d bytes over cap", len(data))
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagChain, op); err != nil {
		return nil, err
	}
	n := r.U32()
	if !r.OK() || n == 0 || n > MaxChainStatements {
		return nil, malformed(op)
	}
	c := &Chain{stmts: make([]*Statement, 0, n)}
	for i := 0; i < int(n); i++ {
		raw := r.Var(MaxStatementSize)
		if !r.OK() {
			return nil, malformed(op)
		}
		s, err := DecodeStatement(raw)
		if err != nil {
			return nil, &ChainError{Index: i, Reason: ReasonMalformed, Detail: err.Error()}
		}
		c.stmts = append(c.stmts, s)
	}
	if !r.Done() {
		return nil, malformed(op)
	}
	return c, nil
}

// Relation is how one chain of an account relates to another.
type Relation uint8

// Relations returned by Compare.
const (
	Same       Relation = 1 // identical
	Extends    Relation = 2 // the new chain is the old one plus more statements
	RolledBack Relation = 3 // the new chain is a strict prefix of the old one
	Forked     Relation = 4 // the chains diverge (at some index, possibly the genesis)
)

// String names the relation.
func (r Relation) String() string {
	switch r {
	case Same:
		return "same"
	case Extends:
		return "extends"
	case RolledBack:
		return "rolled back"
	case Forked:
		return "forked"
	}
	return fmt.Sprintf("relation(%d)", uint8(r))
}

// Compare says how newer relates to older, statement by statement. It compares encodings only; Replay both
// chains first. A node accepts newer only if it is Same or Extends.
func Compare(older, newer *Chain) Relation {
	n := min(len(older.stmts), len(newer.stmts))
	for i := 0; i < n; i++ {
		if !bytes.Equal(older.stmts[i].raw, newer.stmts[i].raw) {
			return Forked
		}
	}
	switch {
	case len(older.stmts) == len(newer.stmts):
		return Same
	case len(newer.stmts) > len(older.stmts):
		return Extends
	default:
		return RolledBack
	}
}

// ForkIndex returns the index of the first statement where the chains differ, or -1 if one is a prefix of the
// other.
func ForkIndex(a, b *Chain) int {
	n := min(len(a.stmts), len(b.stmts))
	for i := 0; i < n; i++ {
		if !bytes.Equal(a.stmts[i].raw, b.stmts[i].raw) {
			return i
		}
	}
	return -1
}
