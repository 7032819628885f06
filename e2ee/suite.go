package e2ee

import (
	"crypto/hpke"

	"github.com/iagon/gridchat/e2ee/internal/frame"
)

// Version is the version of every format and transcript this package produces.
const Version = 1

// Suite identifiers. They appear in every signed transcript, so a signature never verifies under another suite.
const (
	// SigEd25519ctx is the signature algorithm: Ed25519ctx (RFC 8032) with a context string per purpose.
	SigEd25519ctx uint16 = 0x0001
	// KEMMLKEM768X25519 is the HPKE KEM: ML-KEM-768 + X25519 (X-Wing), draft-ietf-hpke-pq.
	KEMMLKEM768X25519 uint16 = 0x647a
	// KDFHKDFSHA256 is the HPKE KDF and the KDF of the message chain.
	KDFHKDFSHA256 uint16 = 0x0001
	// AEADChaCha20Poly1305 is the HPKE AEAD and the message AEAD.
	AEADChaCha20Poly1305 uint16 = 0x0003
)

// Suite names the algorithms of a format: protocol version, signature, KEM, KDF and AEAD. It is encoded as
// 9 bytes: version(1) sig(2) kem(2) kdf(2) aead(2), all big-endian.
type Suite struct {
	Version uint8
	Sig     uint16
	KEM     uint16
	KDF     uint16
	AEAD    uint16
}

// SuiteV1 is the only suite of version 1. It is a value to compare with and copy; never assign to it.
var SuiteV1 = Suite{Version: Version, Sig: SigEd25519ctx, KEM: KEMMLKEM768X25519, KDF: KDFHKDFSHA256, AEAD: AEADChaCha20Poly1305}

const suiteSize = 9

func (s Suite) put(b *frame.Builder) {
	b.U8(s.Version)
	b.U16(s.Sig)
	b.U16(s.KEM)
	b.U16(s.KDF)
	b.U16(s.AEAD)
}

// suiteV1 returns the version 1 suite without reading the exported variable, so no assignment to SuiteV1 can
// change what this package produces or accepts.
func suiteV1() Suite {
	return Suite{Version: Version, Sig: SigEd25519ctx, KEM: KEMMLKEM768X25519, KDF: KDFHKDFSHA256, AEAD: AEADChaCha20Poly1305}
}

func (s Suite) bytes() []byte {
	b := frame.NewBuilder(suiteSize)
	s.put(b)
	out, _ := b.Bytes()
	return out
}

// readHeader reads the tag, version and suite that open every top-level encoding.
func readHeader(r *frame.Reader, tag byte, op string) error {
	t, v := r.U8(), r.U8()
	if !r.OK() || t != tag {
		return malformed(op)
	}
	if v != Version {
		return errorf(op, ErrUnsupported, "version %d", v)
	}
	return readSuite(r, op)
}

// readSuite reads a suite and refuses anything but the version 1 suite.
func readSuite(r *frame.Reader, op string) error {
	s := Suite{Version: r.U8(), Sig: r.U16(), KEM: r.U16(), KDF: r.U16(), AEAD: r.U16()}
	if !r.OK() {
		return malformed(op)
	}
	if s != suiteV1() {
		return errorf(op, ErrUnsupported, "suite %+v", s)
	}
	return nil
}

// putHeader writes tag, version and suite.
func putHeader(b *frame.Builder, tag byte) {
	b.U8(tag)
	b.U8(Version)
	suiteV1().put(b)
}

func hpkeKEM() hpke.KEM   { return hpke.MLKEM768X25519() }
func hpkeKDF() hpke.KDF   { return hpke.HKDFSHA256() }
func hpkeAEAD() hpke.AEAD { return hpke.ChaCha20Poly1305() }

// Object tags: the first byte of every top-level encoding, followed by the version byte.
const (
	tagDevicePublic   = 0x01
	tagDeviceKeys     = 0x02
	tagMessagingKey   = 0x03
	tagStatement      = 0x04
	tagChain          = 0x05
	tagRegistration   = 0x06
	tagAuth           = 0x07
	tagRequest        = 0x08
	tagKeyDist        = 0x09
	tagMessage        = 0x0a
	tagSession        = 0x0b
	tagReceiver       = 0x0c
	tagSender         = 0x0d
	tagDeviceCert     = 0x0e
	tagSealedPrivate  = 0x0f
	headerSize        = 2
	signatureSize     = 64
	maxTimeUnixSecond = 1<<62 - 1
)

// Signature contexts (Ed25519ctx), one per purpose.
const (
	CtxDeviceReg     = "gridchat/v1/device-reg"
	CtxDeviceCert    = "gridchat/v1/device-cert"
	CtxMessagingKey  = "gridchat/v1/messaging-key"
	CtxConnAuth      = "gridchat/v1/conn-auth"
	CtxKeyDist       = "gridchat/v1/keydist"
	CtxMessage       = "gridchat/v1/message"
	ctxRequestPrefix = "gridchat/v1/req/"
	ctxChainPrefix   = "gridchat/v1/sigchain/"
)

// Hash and KDF labels.
const (
	labelDeviceID      = "gridchat/v1/device-id"
	labelAccountID     = "gridchat/v1/account-id"
	labelStatementHash = "gridchat/v1/statement-hash"
	labelKeyID         = "gridchat/v1/messaging-key-id"
	labelKeyDistInfo   = "gridchat/v1/keydist-hpke"
	labelChallengeInfo = "gridchat/v1/key-challenge-hpke"
	labelChallengeAns  = "gridchat/v1/key-challenge-answer"
	labelMessageAD     = "gridchat/v1/message-ad"
	labelChainContext  = "gridchat/v1/chain-context"
	labelRequestBody   = "gridchat/v1/request-body"
	labelSealedPrivate = "gridchat/v1/sealed-private"
)
