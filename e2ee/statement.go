package e2ee

import (
	"bytes"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// StatementKind is the kind of a sigchain statement. Values are wire codes and never renumbered.
type StatementKind uint8

// Statement kinds.
const (
	KindGenesis      StatementKind = 1
	KindAddDevice    StatementKind = 2
	KindRevokeDevice StatementKind = 3
	KindSetUsername  StatementKind = 4
	KindSetProfile   StatementKind = 5
	KindLinkSocial   StatementKind = 6
)

var kindNames = [...]string{
	KindGenesis:      "genesis",
	KindAddDevice:    "add-device",
	KindRevokeDevice: "revoke-device",
	KindSetUsername:  "set-username",
	KindSetProfile:   "set-profile",
	KindLinkSocial:   "link-social",
}

// String returns the kind's name, which is also the suffix of its signature context.
func (k StatementKind) String() string {
	if k >= 1 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k StatementKind) context() string { return ctxChainPrefix + k.String() }

// Size caps of statement fields.
const (
	MaxStatementSize   = 16 << 10
	MaxUsernameLen     = 64
	MaxProfileName     = 128
	MaxProfileDesc     = 1024
	MaxPictureRef      = 512
	MaxProviderLen     = 64
	MaxSubjectLen      = 256
	MaxAttestationSize = 8 << 10
	maxDevicePublic    = headerSize + suiteSize + 32 + 4 + messagingPublicSize
	maxDeviceCert      = headerSize + suiteSize + 32 + 8 + 4 + maxDevicePublic + signatureSize
)

// Body is the kind-specific content of a statement: one of *Genesis, *AddDevice, *RevokeDevice, *SetUsername,
// *SetProfile, *LinkSocial.
type Body interface {
	Kind() StatementKind
	encodeBody(b *frame.Builder)
}

// Genesis is the first statement of an account: it adds the first device, which signs it.
type Genesis struct{ Device DevicePublic }

// AddDevice adds a device. It is signed by a current device and carries the new device's certificate, its
// own signature over its keys and the account, so nobody can add a key they do not hold.
type AddDevice struct{ Cert *DeviceCert }

// RevokeDevice removes a current device. The last device cannot be revoked.
type RevokeDevice struct{ Device DeviceID }

// SetUsername sets the account's username (see ValidUsername).
type SetUsername struct{ Username string }

// SetProfile replaces the account's public profile.
type SetProfile struct{ Profile Profile }

// LinkSocial links (or, with an empty subject, unlinks) a social account of one provider.
type LinkSocial struct{ Link SocialLink }

// Profile is an account's public profile.
type Profile struct {
	Name        string
	Description string
	PictureRef  string // where the picture is stored (e.g. a content address)
	PictureHash []byte // SHA-256 of the picture bytes, empty or 32 bytes
}

// SocialLink is a social account linked to the gridchat account.
type SocialLink struct {
	Provider    string // e.g. "github"
	Subject     string // the provider's stable user ID
	Attestation []byte // optional: a node's signed attestation of the verified identity
}

// Kind implements Body.
func (*Genesis) Kind() StatementKind { return KindGenesis }

// Kind implements Body.
func (*AddDevice) Kind() StatementKind { return KindAddDevice }

// Kind implements Body.
func (*RevokeDevice) Kind() StatementKind { return KindRevokeDevice }

// Kind implements Body.
func (*SetUsername) Kind() StatementKind { return KindSetUsername }

// Kind implements Body.
func (*SetProfile) Kind() StatementKind { return KindSetProfile }

// Kind implements Body.
func (*LinkSocial) Kind() StatementKind { return KindLinkSocial }

func (g *Genesis) encodeBody(b *frame.Builder)      { b.Var(g.Device.Encode()) }
func (a *AddDevice) encodeBody(b *frame.Builder)    { b.Var(a.Cert.Encode()) }
func (r *RevokeDevice) encodeBody(b *frame.Builder) { b.Raw(r.Device[:]) }
func (u *SetUsername) encodeBody(b *frame.Builder)  { b.Var([]byte(u.Username)) }
func (p *SetProfile) encodeBody(b *frame.Builder) {
	b.Var([]byte(p.Profile.Name))
	b.Var([]byte(p.Profile.Description))
	b.Var([]byte(p.Profile.PictureRef))
	b.Var(p.Profile.PictureHash)
}
func (l *LinkSocial) encodeBody(b *frame.Builder) {
	b.Var([]byte(l.Link.Provider))
	b.Var([]byte(l.Link.Subject))
	b.Var(l.Link.Attestation)
}

// ValidUsername reports whether s is a well-formed username: 1 to 64 bytes of a-z, 0-9, '.', '_' and '-',
// starting with a letter or digit.
func ValidUsername(s string) bool {
	if len(s) < 1 || len(s) > MaxUsernameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

func validProvider(s string) bool {
	if len(s) < 1 || len(s) > MaxProviderLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// validateBody checks the field rules of a body (sizes, character sets), independent of account state.
func validateBody(body Body) error {
	switch v := body.(type) {
	case *Genesis:
		if len(v.Device.Signing) != 32 || len(v.Device.Messaging) != messagingPublicSize || v.Device.Suite != suiteV1() {
			return fmt.Errorf("genesis device keys")
		}
	case *AddDevice:
		if v.Cert == nil {
			return fmt.Errorf("add-device without certificate")
		}
	case *RevokeDevice:
	case *SetUsername:
		if !ValidUsername(v.Username) {
			return fmt.Errorf("invalid username %q", v.Username)
		}
	case *SetProfile:
		p := v.Profile
		if len(p.Name) > MaxProfileName || len(p.Description) > MaxProfileDesc || len(p.PictureRef) > MaxPictureRef ||
			!utf8.ValidString(p.Name) || !utf8.ValidString(p.Description) || !utf8.ValidString(p.PictureRef) ||
			(len(p.PictureHash) != 0 && len(p.PictureHash) != 32) {
			return fmt.Errorf("invalid profile")
		}
	case *LinkSocial:
		l := v.Link
		if !validProvider(l.Provider) || len(l.Subject) > MaxSubjectLen || !utf8.ValidString(l.Subject) ||
			len(l.Attestation) > MaxAttestationSize || (l.Subject == "" && len(l.Attestation) != 0) {
			return fmt.Errorf("invalid social link")
		}
	default:
		return fmt.Errorf("unknown body type %T", body)
	}
	return nil
}

func decodeBody(kind StatementKind, data []byte) (Body, error) {
	r := frame.NewReader(data)
	var body Body
	switch kind {
	case KindGenesis:
		dp, err := DecodeDevicePublic(r.Var(maxDevicePublic))
		if err != nil {
			return nil, err
		}
		body = &Genesis{Device: dp}
	case KindAddDevice:
		c, err := DecodeDeviceCert(r.Var(maxDeviceCert))
		if err != nil {
			return nil, err
		}
		body = &AddDevice{Cert: c}
	case KindRevokeDevice:
		v := &RevokeDevice{}
		r.Fixed(v.Device[:])
		body = v
	case KindSetUsername:
		body = &SetUsername{Username: string(r.Var(MaxUsernameLen))}
	case KindSetProfile:
		body = &SetProfile{Profile: Profile{
			Name: string(r.Var(MaxProfileName)), Description: string(r.Var(MaxProfileDesc)),
			PictureRef: string(r.Var(MaxPictureRef)), PictureHash: r.Var(32),
		}}
	case KindLinkSocial:
		body = &LinkSocial{Link: SocialLink{
			Provider: string(r.Var(MaxProviderLen)), Subject: string(r.Var(MaxSubjectLen)), Attestation: r.Var(MaxAttestationSize),
		}}
	default:
		return nil, fmt.Errorf("%w: statement kind %d", ErrMalformed, kind)
	}
	if !r.Done() {
		return nil, fmt.Errorf("%w: %s body", ErrMalformed, kind)
	}
	if err := validateBody(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return body, nil
}

// Statement is one signed entry of an account's sigchain. Statements are immutable once made; build them
// with NewAccount and Chain.Append, read them with DecodeChain.
type Statement struct {
	Kind   StatementKind
	Seq    uint64
	Prev   [32]byte // Hash of the previous statement; zero in the genesis statement
	Time   time.Time
	Signer DeviceID
	Body   Body
	Sig    []byte
	raw    []byte
}

func (s *Statement) transcript() ([]byte, error) {
	b := frame.NewBuilder(512)
	putHeader(b, tagStatement)
	b.U8(uint8(s.Kind))
	b.U64(s.Seq)
	b.Raw(s.Prev[:])
	b.U64(unixSeconds(s.Time))
	b.Raw(s.Signer[:])
	body := frame.NewBuilder(256)
	s.Body.encodeBody(body)
	bb, err := body.Bytes()
	if err != nil {
		return nil, err
	}
	b.Var(bb)
	return b.Bytes()
}

// Encode returns the statement's encoding: its signed transcript followed by the signature.
func (s *Statement) Encode() []byte { return append([]byte(nil), s.raw...) }

// Hash returns SHA-256 over "gridchat/v1/statement-hash" and the statement's encoding; the next statement's
// Prev.
func (s *Statement) Hash() [32]byte { return frame.Hash(labelStatementHash, s.raw) }

// DecodeStatement decodes one statement strictly. It checks the body's field rules but not the signature or
// the chain (Replay does).
func DecodeStatement(data []byte) (*Statement, error) {
	const op = "decode statement"
	if len(data) > MaxStatementSize {
		return nil, errorf(op, ErrMalformed, "%d bytes over cap", len(data))
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagStatement, op); err != nil {
		return nil, err
	}
	s := &Statement{Kind: StatementKind(r.U8()), Seq: r.U64()}
	r.Fixed(s.Prev[:])
	t := r.U64()
	r.Fixed(s.Signer[:])
	body := r.Var(MaxStatementSize)
	s.Sig = r.Raw(signatureSize)
	if !r.Done() || t > maxTimeUnixSecond {
		return nil, malformed(op)
	}
	s.Time = fromUnix(t)
	var err error
	if s.Body, err = decodeBody(s.Kind, body); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	// Re-encoding must reproduce the input exactly, so every statement has one encoding (and one hash).
	tr, err := s.transcript()
	if err != nil || !bytes.Equal(tr, data[:len(data)-signatureSize]) {
		return nil, errorf(op, ErrMalformed, "non-canonical encoding")
	}
	s.raw = append([]byte(nil), data...)
	return s, nil
}

// DeviceCert is a device's self-signature over its public keys and the account it joins (context
// CtxDeviceCert). An AddDevice statement carries it.
type DeviceCert struct {
	Account AccountID
	Device  DevicePublic
	Time    time.Time
	Sig     []byte
}

// NewDeviceCert signs dev's public keys for joining account.
func NewDeviceCert(dev *DeviceKeys, account AccountID, now time.Time) *DeviceCert {
	c := &DeviceCert{Account: account, Device: dev.Public(), Time: now.Truncate(time.Second).UTC()}
	c.Sig = dev.sign(CtxDeviceCert, c.transcript())
	return c
}

func (c *DeviceCert) transcript() []byte {
	b := frame.NewBuilder(maxDeviceCert)
	putHeader(b, tagDeviceCert)
	b.Raw(c.Account[:])
	b.U64(unixSeconds(c.Time))
	b.Var(c.Device.Encode())
	out, _ := b.Bytes()
	return out
}

// Encode returns the certificate's encoding: transcript followed by signature.
func (c *DeviceCert) Encode() []byte { return append(c.transcript(), c.Sig...) }

// Verify checks the certificate's self-signature.
func (c *DeviceCert) Verify() error {
	if !verifySig(c.Device.Signing, CtxDeviceCert, c.transcript(), c.Sig) {
		return errorf("verify device certificate", ErrBadSignature, "device %s", c.Device.ID())
	}
	return nil
}

// DecodeDeviceCert decodes a certificate strictly (without verifying it).
func DecodeDeviceCert(data []byte) (*DeviceCert, error) {
	const op = "decode device certificate"
	if len(data) > maxDeviceCert {
		return nil, malformed(op)
	}
	r := frame.NewReader(data)
	if err := readHeader(r, tagDeviceCert, op); err != nil {
		return nil, err
	}
	c := &DeviceCert{}
	r.Fixed(c.Account[:])
	t := r.U64()
	dp := r.Var(maxDevicePublic)
	c.Sig = r.Raw(signatureSize)
	if !r.Done() || t > maxTimeUnixSecond {
		return nil, malformed(op)
	}
	var err error
	if c.Device, err = DecodeDevicePublic(dp); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	c.Time = fromUnix(t)
	return c, nil
}
