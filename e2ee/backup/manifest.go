package backup

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Manifest constants.
const (
	// ManifestContext is the Ed25519ctx context of manifest signatures.
	ManifestContext = "gridchat/v1/backup-manifest"
	// ManifestVersion is the version byte of the manifest encoding.
	ManifestVersion = 1
	// MaxManifestSize is the largest signed manifest a decoder accepts.
	MaxManifestSize  = 1 + 4 + maxAccountIDSize + 8 + 4 + archiveIDSize + 4 + 32 + 8 + 8 + ed25519.SignatureSize
	maxAccountIDSize = 64
	archiveHashSize  = 32
)

// Manifest errors; match them with errors.Is.
var (
	// ErrManifestFormat reports a malformed signed manifest.
	ErrManifestFormat = errors.New("backup: malformed manifest")
	// ErrManifestSignature reports a manifest whose signature does not
	// verify under the given key.
	ErrManifestSignature = errors.New("backup: manifest signature invalid")
	// ErrRollback reports a manifest that is not newer than one seen
	// before: a store serving an old backup as new.
	ErrRollback = errors.New("backup: manifest is not newer than the last one seen")
	// ErrOtherAccount reports manifests of two different accounts.
	ErrOtherAccount = errors.New("backup: manifest is for another account")
)

// Manifest describes one stored backup. The account signs it; its sequence
// number grows with every backup.
type Manifest struct {
	// AccountID is the account the backup belongs to (1..64 bytes).
	AccountID []byte
	// Sequence numbers the account's backups, starting at 1.
	Sequence uint64
	// ArchiveID is the archive's header ID (16 bytes).
	ArchiveID []byte
	// ArchiveSHA256 is the SHA-256 of the whole archive as stored.
	ArchiveSHA256 []byte
	// Size is the archive's size in bytes.
	Size uint64
	// Created is when the backup was made (second precision).
	Created time.Time
}

func (m Manifest) encode() ([]byte, error) {
	if len(m.AccountID) == 0 || len(m.AccountID) > maxAccountIDSize {
		return nil, fmt.Errorf("account ID of %d bytes", len(m.AccountID))
	}
	if len(m.ArchiveID) != archiveIDSize || len(m.ArchiveSHA256) != archiveHashSize {
		return nil, fmt.Errorf("archive ID or hash of wrong size")
	}
	if m.Created.Unix() < 0 {
		return nil, fmt.Errorf("creation time before 1970")
	}
	var b cryptobyte.Builder
	b.AddUint8(ManifestVersion)
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.AccountID) })
	b.AddUint64(m.Sequence)
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.ArchiveID) })
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.ArchiveSHA256) })
	b.AddUint64(m.Size)
	b.AddUint64(uint64(m.Created.Unix()))
	return b.Bytes()
}

// SignManifest encodes m and signs it with the account device's private
// key (Ed25519ctx, context ManifestContext). The result is the encoding
// followed by the 64-byte signature.
func SignManifest(priv ed25519.PrivateKey, m Manifest) ([]byte, error) {
	body, err := m.encode()
	if err != nil {
		return nil, fmt.Errorf("backup: sign manifest: %w", err)
	}
	sig, err := priv.Sign(nil, body, &ed25519.Options{Context: ManifestContext})
	if err != nil {
		return nil, fmt.Errorf("backup: sign manifest: %w", err)
	}
	return append(body, sig...), nil
}

// VerifyManifest verifies a signed manifest under pub and decodes it. It
// returns ErrManifestFormat or ErrManifestSignature.
func VerifyManifest(pub ed25519.PublicKey, signed []byte) (Manifest, error) {
	const op = "backup: verify manifest"
	if len(pub) != ed25519.PublicKeySize {
		return Manifest{}, fmt.Errorf("%s: public key of %d bytes", op, len(pub))
	}
	if len(signed) > MaxManifestSize || len(signed) < ed25519.SignatureSize+1 {
		return Manifest{}, fmt.Errorf("%s: %d bytes: %w", op, len(signed), ErrManifestFormat)
	}
	body, sig := signed[:len(signed)-ed25519.SignatureSize], signed[len(signed)-ed25519.SignatureSize:]
	s := cryptobyte.String(body)
	var (
		ver                uint8
		acct, aid, sum     []byte
		seq, size, created uint64
		m                  Manifest
	)
	if !s.ReadUint8(&ver) {
		return Manifest{}, fmt.Errorf("%s: %w", op, ErrManifestFormat)
	}
	if ver != ManifestVersion {
		return Manifest{}, fmt.Errorf("%s: version %d: %w", op, ver, ErrManifestFormat)
	}
	if !readLV(&s, &acct) || !s.ReadUint64(&seq) ||
		!readLV(&s, &aid) || !readLV(&s, &sum) ||
		!s.ReadUint64(&size) || !s.ReadUint64(&created) || !s.Empty() ||
		len(acct) == 0 || len(acct) > maxAccountIDSize || len(aid) != archiveIDSize ||
		len(sum) != archiveHashSize || created > 1<<62 {
		return Manifest{}, fmt.Errorf("%s: %w", op, ErrManifestFormat)
	}
	if err := ed25519.VerifyWithOptions(pub, body, sig, &ed25519.Options{Context: ManifestContext}); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", op, ErrManifestSignature)
	}
	m = Manifest{
		AccountID: append([]byte(nil), acct...), Sequence: seq,
		ArchiveID: append([]byte(nil), aid...), ArchiveSHA256: append([]byte(nil), sum...),
		Size: size, Created: time.Unix(int64(created), 0).UTC(),
	}
	return m, nil
}

// CheckNewer returns nil if m is a later backup of the same account than
// prev, ErrRollback if its sequence number is not greater, and
// ErrOtherAccount if the accounts differ.
func (m Manifest) CheckNewer(prev Manifest) error {
	if string(m.AccountID) != string(prev.AccountID) {
		return fmt.Errorf("backup: check manifest: %w", ErrOtherAccount)
	}
	if m.Sequence <= prev.Sequence {
		return fmt.Errorf("backup: check manifest: sequence %d after %d: %w", m.Sequence, prev.Sequence, ErrRollback)
	}
	return nil
}

// readLV reads a field with a big-endian uint32 length prefix.
func readLV(s *cryptobyte.String, out *[]byte) bool {
	var n uint32
	return s.ReadUint32(&n) && int64(n) <= int64(len(*s)) && s.ReadBytes(out, int(n))
}
