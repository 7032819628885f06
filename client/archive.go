package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/iagon/gridchat/client/store"
	"github.com/iagon/gridchat/e2ee"
	"github.com/iagon/gridchat/e2ee/backup"
)

// Archives (backups and history transfers) are in the e2ee/backup archive format (docs/PROTOCOL.md §3): its
// plaintext is a sequence of CBOR arrays [bucket, key, value], one per store entry (docs/PROTOCOL.md §9.5).
// A backup holds every entry, device keys included, so a restore with the passphrase alone gives back the
// whole device. A history transfer holds only conversations, contacts and messages.

// archiveEntry is one store entry in an archive.
type archiveEntry struct {
	_      struct{} `cbor:",toarray"`
	Bucket string
	Key    string
	Value  []byte
}

// Archive limits.
const (
	// MaxArchiveBytes caps an archive a client reads.
	MaxArchiveBytes = 256 << 20
	backupBlobName  = "gridchat-backup"
)

// ErrBadArchive means an archive does not decrypt or decode.
var ErrBadArchive = errors.New("client: bad archive")

// writeArchive writes the entries of the buckets that keep accepts, encrypted under passphrase (and, if rk is
// set, also under the recovery key).
func (c *Client) writeArchive(w io.Writer, passphrase []byte, rk *backup.RecoveryKey, keep func(bucket string) bool) (int, error) {
	aw, err := backup.NewWriter(w, passphrase, backup.WriterOptions{RecoveryKey: rk})
	if err != nil {
		return 0, err
	}
	enc := c.cd.enc.NewEncoder(aw)
	n := 0
	for _, bucket := range c.buckets() {
		if !keep(bucket) {
			continue
		}
		for _, k := range c.st.Keys(bucket) {
			v, ok := c.st.Get(bucket, k)
			if !ok {
				continue
			}
			if bucket == bucketConvs && !keep("") { // history: a conversation's own numbering stays with its device
				v = c.portableConv(v)
			}
			if err := enc.Encode(archiveEntry{Bucket: bucket, Key: k, Value: v}); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, aw.Close()
}

// portableConv strips device-specific fields from a conversation record. The causal clock stays: the new
// device has seen what the history holds.
func (c *Client) portableConv(v []byte) []byte {
	var r convRecord
	if err := c.cd.dec.Unmarshal(v, &r); err != nil {
		return v
	}
	out, err := c.cd.enc.Marshal(convRecord{Kind: r.Kind, Peer: r.Peer, Group: r.Group, NextSeq: 1, Clock: r.Clock})
	if err != nil {
		return v
	}
	return out
}

// buckets lists the store's buckets: the fixed ones and every message bucket.
func (c *Client) buckets() []string {
	out := []string{bucketSelf, bucketChains, bucketContacts, bucketConvs, bucketSenders, bucketReceivers,
		bucketTracks, bucketSent, bucketSeen, bucketPending, bucketKeys}
	for _, k := range c.st.Keys(bucketConvs) {
		id, err := e2ee.ParseConversationID(k)
		if err == nil {
			out = append(out, msgBucket(id))
		}
	}
	return out
}

// readArchive decrypts an archive and calls put for every entry.
func (c *Client) readArchive(r io.Reader, passphrase []byte, rk *backup.RecoveryKey, put func(archiveEntry) error) error {
	var ar *backup.Reader
	var err error
	if rk != nil {
		ar, err = backup.NewRecoveryReader(r, rk)
	} else {
		ar, err = backup.NewReader(r, passphrase)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	dec := c.cd.dec.NewDecoder(io.LimitReader(ar, MaxArchiveBytes))
	for {
		var e archiveEntry
		err := dec.Decode(&e)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		if len(e.Bucket) > store.MaxNameLen || len(e.Key) > store.MaxNameLen {
			return fmt.Errorf("%w: entry name too long", ErrBadArchive)
		}
		if err := put(e); err != nil {
			return err
		}
	}
}

// --- backup --------------------------------------------------------------------------------------------

// BlobStore is where backups are kept. The grid's replicated store and the Iagon storage service are later
// backends; FileBlobStore keeps them in a local directory.
type BlobStore interface {
	// Put stores data under name, replacing what was there.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns what Put stored under name; a missing name is an error wrapping os.ErrNotExist.
	Get(ctx context.Context, name string) ([]byte, error)
}

// FileBlobStore is a BlobStore in a local directory.
type FileBlobStore struct {
	// Dir is the directory; it is created on first Put.
	Dir string
}

// Put writes data to Dir/name atomically.
func (f FileBlobStore) Put(_ context.Context, name string, data []byte) error {
	if strings.ContainsAny(name, `/\`) || name == "" || name[0] == '.' {
		return fmt.Errorf("client: blob name %q", name)
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.Dir, ".blob-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(f.Dir, name))
}

// Get reads Dir/name.
func (f FileBlobStore) Get(_ context.Context, name string) ([]byte, error) {
	if strings.ContainsAny(name, `/\`) || name == "" || name[0] == '.' {
		return nil, fmt.Errorf("client: blob name %q", name)
	}
	return os.ReadFile(filepath.Join(f.Dir, name))
}

// Backup writes an encrypted archive of this device's whole state (keys, conversations, history) to blobs,
// under a key derived from passphrase with Argon2id (never weaker than t=3, 64 MiB, p=4).
func (c *Client) Backup(ctx context.Context, blobs BlobStore, passphrase string) error {
	if len(passphrase) < 8 {
		return errors.New("client: backup passphrase must have at least 8 characters")
	}
	var buf bytes.Buffer
	c.eng.mu.Lock() // a consistent snapshot: no message is half applied
	_, err := c.writeArchive(&buf, []byte(passphrase), nil, func(string) bool { return true })
	c.eng.mu.Unlock()
	if err != nil {
		return fmt.Errorf("client: backup: %w", err)
	}
	if err := blobs.Put(ctx, backupBlobName, buf.Bytes()); err != nil {
		return fmt.Errorf("client: backup: store: %w", err)
	}
	return nil
}

// Restore rebuilds a device from a backup in blobs with the passphrase alone, into the empty state directory
// cfg.Dir, and opens it.
func Restore(ctx context.Context, cfg Config, blobs BlobStore, passphrase string) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	data, err := blobs.Get(ctx, backupBlobName)
	if err != nil {
		return nil, fmt.Errorf("client: restore: %w", err)
	}
	if len(data) > MaxArchiveBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadArchive, len(data))
	}
	return openState(cfg, func(st *store.Store) error {
		cd, err := newCodec()
		if err != nil {
			return err
		}
		tmp := &Client{cd: cd}
		err = tmp.readArchive(bytes.NewReader(data), []byte(passphrase), nil, func(e archiveEntry) error {
			return st.Put(e.Bucket, e.Key, e.Value)
		})
		if err != nil {
			return fmt.Errorf("client: restore: %w", err)
		}
		return nil
	})
}

// --- history for a linked device ------------------------------------------------------------------------

// historyChunkBytes is the archive bytes carried by one history payload. Sealed, with the new device's key
// distribution chunk and this device's signed key attached, a chunk stays under the grid's ciphertext limit
// (64 KiB by default, docs/PROTOCOL.md §8), so it travels as one envelope rather than as fragments.
const historyChunkBytes = 32 << 10

func historyBucket(bucket string) bool {
	return bucket == bucketConvs || bucket == bucketContacts || strings.HasPrefix(bucket, msgBucketPrefix)
}

// SendHistory streams this device's conversation history (conversations, contacts and messages) to another
// device of this account, end to end encrypted through the grid: an archive in the backup format under a
// fresh random key, carried in chunks in the account's self conversation to that device only.
func (c *Client) SendHistory(ctx context.Context, to e2ee.DeviceID) (int, error) {
	rk, err := backup.NewRecoveryKey(rand.Reader)
	if err != nil {
		return 0, err
	}
	pass := make([]byte, 32)
	rand.Read(pass)
	var buf bytes.Buffer
	c.eng.mu.Lock()
	n, err := c.writeArchive(&buf, pass, rk, historyBucket)
	c.eng.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("client: history: %w", err)
	}
	transfer := make([]byte, 16)
	rand.Read(transfer)
	data := buf.Bytes()
	self := SelfConversationID(c.eng.self)
	key := []byte(rk.String())
	for i := 0; ; i++ {
		chunk := data[:min(historyChunkBytes, len(data))]
		data = data[len(chunk):]
		h := &historyBody{Transfer: transfer, Index: uint32(i), Last: len(data) == 0, Data: chunk}
		if i == 0 {
			h.Key = key
		}
		if _, err := c.eng.send(ctx, self, &payload{Type: PayloadHistory, History: h}, sendOpts{only: []e2ee.DeviceID{to}, noRecord: true}); err != nil {
			return 0, fmt.Errorf("client: history chunk %d: %w", i, err)
		}
		if len(data) == 0 {
			return n, nil
		}
	}
}

// historyChunk keeps one chunk of an incoming history transfer; the last chunk triggers the import.
func (e *engine) historyChunk(b *store.Batch, from e2ee.DeviceID, h *historyBody) error {
	v, err := e.cd.enc.Marshal(h)
	if err != nil {
		return err
	}
	b.Put(bucketHistory, fmt.Sprintf("%x/%08x", h.Transfer, h.Index), v)
	if h.Last {
		transfer := fmt.Sprintf("%x", h.Transfer)
		last := h.Index
		e.async(func(ctx context.Context) { e.importHistory(from, transfer, last) })
	}
	return nil
}

// importHistory assembles a finished transfer and merges it: conversations and contacts this device lacks,
// and every message it does not hold yet, with its counter. Each conversation's clock rises to the largest
// counter of its imported messages (as for received ones, at most MaxClockLead ahead), so this device's next
// message lists after the history.
func (e *engine) importHistory(from e2ee.DeviceID, transfer string, last uint32) {
	// The receive path holds e.mu until the batch with the last chunk is committed; taking it here first means
	// every chunk is in the store.
	e.mu.Lock()
	defer e.mu.Unlock()
	var data bytes.Buffer
	var key []byte
	var keys []string
	for i := uint32(0); i <= last; i++ {
		k := fmt.Sprintf("%s/%08x", transfer, i)
		v, ok := e.st.Get(bucketHistory, k)
		if !ok {
			e.cfg.log.Warn("history transfer incomplete", "from", from, "missing", i)
			return
		}
		var h historyBody
		if err := e.cd.dec.Unmarshal(v, &h); err != nil {
			return
		}
		if i == 0 {
			key = h.Key
		}
		data.Write(h.Data)
		keys = append(keys, k)
	}
	rk, err := backup.ParseRecoveryKey(string(key))
	if err != nil {
		e.cfg.log.Warn("history transfer key does not parse", "from", from, "err", err)
		return
	}
	var entries []archiveEntry
	tmp := &Client{cd: e.cd}
	if err := tmp.readArchive(&data, nil, rk, func(a archiveEntry) error {
		if !historyBucket(a.Bucket) {
			return fmt.Errorf("%w: history entry in bucket %q", ErrBadArchive, a.Bucket)
		}
		entries = append(entries, a)
		return nil
	}); err != nil {
		e.cfg.log.Warn("history transfer refused", "from", from, "err", err)
		return
	}
	msgs := 0
	now := e.cfg.now()
	convs := map[string]*convRecord{} // conversations whose record this import writes, by hex ID
	err = e.st.Update(func(b *store.Batch) error {
		for _, a := range entries {
			if _, ok := e.st.Get(a.Bucket, a.Key); ok {
				continue
			}
			if a.Bucket == bucketConvs {
				// Kept decoded until every message is in: the messages raise its clock.
				var r convRecord
				if err := e.cd.dec.Unmarshal(a.Value, &r); err != nil {
					return fmt.Errorf("%w: conversation %s: %v", ErrBadArchive, a.Key, err)
				}
				convs[a.Key] = &r
				continue
			}
			if conv, ok := strings.CutPrefix(a.Bucket, msgBucketPrefix); ok {
				var mr msgRecord
				if err := e.cd.dec.Unmarshal(a.Value, &mr); err != nil {
					return fmt.Errorf("%w: message %s: %v", ErrBadArchive, a.Key, err)
				}
				r, ok := convs[conv]
				if !ok {
					id, err := e2ee.ParseConversationID(conv)
					if err != nil {
						return fmt.Errorf("%w: message bucket %q", ErrBadArchive, a.Bucket)
					}
					if r, ok = e.conv(id); !ok {
						return fmt.Errorf("%w: message of unknown conversation %s", ErrBadArchive, conv)
					}
					convs[conv] = r
				}
				r.witness(orderOf(mr.Clock, mr.SentMS), now)
				msgs++
			}
			b.Put(a.Bucket, a.Key, a.Value)
		}
		for id, r := range convs {
			v, err := e.cd.enc.Marshal(r)
			if err != nil {
				return err
			}
			b.Put(bucketConvs, id, v)
		}
		for _, k := range keys {
			b.Delete(bucketHistory, k)
		}
		return nil
	})
	if err != nil {
		e.cfg.log.Warn("history import failed", "err", err)
		return
	}
	e.ev.push(&HistoryEvent{From: from, Messages: msgs})
}
