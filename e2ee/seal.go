package e2ee

import (
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// sealBlob encrypts pt under key with XChaCha20-Poly1305; the blob is magic(4) version(1) nonce(24) ct, and
// magic and version are the associated data together with the label.
func sealBlob(rnd io.Reader, op string, key, pt []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: key: %w", op, err)
	}
	out := make([]byte, 0, len(sealedMagic)+1+chacha20poly1305.NonceSizeX+len(pt)+aead.Overhead())
	out = append(out, sealedMagic...)
	out = append(out, sealedVersion)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, err)
	}
	out = append(out, nonce...)
	ad := append([]byte(labelSealedPrivate), out[:len(sealedMagic)+1]...)
	return aead.Seal(out, nonce, pt, ad), nil
}

func openSealed(op string, key, blob []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: key: %w", op, err)
	}
	hdr := len(sealedMagic) + 1
	if len(blob) < hdr+chacha20poly1305.NonceSizeX+aead.Overhead() || string(blob[:len(sealedMagic)]) != sealedMagic {
		return nil, malformed(op)
	}
	if blob[len(sealedMagic)] != sealedVersion {
		return nil, errorf(op, ErrUnsupported, "sealed version %d", blob[len(sealedMagic)])
	}
	ad := append([]byte(labelSealedPrivate), blob[:hdr]...)
	pt, err := aead.Open(nil, blob[hdr:hdr+chacha20poly1305.NonceSizeX], blob[hdr+chacha20poly1305.NonceSizeX:], ad)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %s: %w", op, ErrDecrypt)
	}
	return pt, nil
}
