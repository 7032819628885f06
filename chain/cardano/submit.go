package cardano

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	ouroboros "github.com/blinklabs-io/gouroboros"
	"github.com/blinklabs-io/gouroboros/ledger"
	"github.com/blinklabs-io/gouroboros/protocol/localtxsubmission"
)

// SocketSubmitter submits transactions to a Cardano node over its local
// socket with the Ouroboros node-to-client local-tx-submission protocol.
type SocketSubmitter struct {
	// Path is the node's unix socket.
	Path string
	// NetworkMagic is the network's magic number (1 preprod, 2 preview,
	// 764824073 mainnet).
	NetworkMagic uint32
	// Timeout bounds a whole submission; it defaults to 30 s.
	Timeout time.Duration
}

// Submit sends one Conway-era transaction and waits for the node's verdict.
func (s *SocketSubmitter) Submit(ctx context.Context, txCbor []byte) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.Path)
	if err != nil {
		return fmt.Errorf("cardano: dial node %s: %w", s.Path, err)
	}
	errs := make(chan error, 4)
	oc, err := ouroboros.NewConnection(
		ouroboros.WithConnection(conn),
		ouroboros.WithNetworkMagic(s.NetworkMagic),
		ouroboros.WithNodeToNode(false),
		ouroboros.WithKeepAlive(false),
		ouroboros.WithErrorChan(errs),
		ouroboros.WithLocalTxSubmissionConfig(localtxsubmission.NewConfig(localtxsubmission.WithTimeout(timeout))),
	)
	if err != nil {
		conn.Close()
		return fmt.Errorf("cardano: connect node %s: %w", s.Path, err)
	}
	defer oc.Close()
	done := make(chan error, 1)
	go func() { done <- oc.LocalTxSubmission().Client.SubmitTx(ledger.EraIdConway, txCbor) }()
	select {
	case err = <-done:
	case err = <-errs:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		var rej localtxsubmission.TransactionRejectedError
		if errors.As(err, &rej) {
			return fmt.Errorf("%w: %v", ErrRejected, rej)
		}
		return fmt.Errorf("cardano: submit: %w", err)
	}
	return nil
}
