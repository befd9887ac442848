// ctr_user: `ctr run --user` as containerd's own client library does it (ctr
// 1.6 has no --user flag): oci.WithUser resolves a user name (and a numeric
// id's group) from the image's /etc/passwd and /etc/group by mounting the
// container's snapshot (the snapshotter's Mounts) in a temporary directory.
// Built by tests/integration/containers_recovery.sh against Debian's
// golang-github-containerd-containerd-dev (GOPATH mode, no network).
//
//	ctr_user SOCKET SNAPSHOTTER IMAGE ID USER CMD...
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
)

func run() error {
	if len(os.Args) < 7 {
		return fmt.Errorf("usage: ctr_user SOCKET SNAPSHOTTER IMAGE ID USER CMD...")
	}
	sock, snapshotter, ref, id, user, args := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6:]
	client, err := containerd.New(sock)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), "default")
	image, err := client.GetImage(ctx, ref)
	if err != nil {
		return err
	}
	c, err := client.NewContainer(ctx, id,
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(id+"-snapshot", image),
		containerd.WithNewSpec(oci.WithImageConfig(image), oci.WithProcessArgs(args...), oci.WithUser(user)))
	if err != nil {
		return fmt.Errorf("new container: %w", err)
	}
	defer c.Delete(ctx, containerd.WithSnapshotCleanup)
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, os.Stdout, os.Stderr)))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
	}
	defer task.Delete(ctx)
	exit, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return err
	}
	st := <-exit
	if code, _, _ := st.Result(); code != 0 {
		return fmt.Errorf("exit status %d", code)
	}
	_ = syscall.Sync
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ctr_user:", err)
		os.Exit(1)
	}
}
