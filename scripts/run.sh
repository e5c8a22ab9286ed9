#!/bin/sh
# `make run`: a single-node legiond (embedded SQLite under $LEGION_HOME,
# default ./var/legion) on 127.0.0.1:7070, with the sample app `hello`
# deployed from examples/python-hello, a busybox image imported as
# legion.local/busybox:1, the container app `web` (busybox httpd from that
# image, public: auth none), the pod examples/pods/hello.yaml started and
# the Dask job examples/jobs/wordcount.py run once.
# It also serves HTTPS on 127.0.0.1:6443 for kubectl. legiond stays in the foreground;
# Ctrl-C stops it; its workloads keep running for the next legiond (apps
# stay in the store): `legiond --home $LEGION_HOME --stop-all` stops them.
set -eu
BUILD=${1:-build}
export LEGION_HOME="${LEGION_HOME:-$PWD/var/legion}"
LISTEN="${LEGION_LISTEN:-127.0.0.1:7070}"
export LEGION_API="http://$LISTEN"
if [ "$(id -u)" != 0 ]; then
        echo "make run needs root: sandboxes use namespaces, cgroups and mounts" >&2
        exit 1
fi

"$BUILD/legiond" --home "$LEGION_HOME" --listen "$LISTEN" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
i=0
until curl -fsS "$LEGION_API/healthz" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
                echo "legiond did not start" >&2
                exit 1
        fi
        sleep 0.1
done

"$BUILD/legion" app deploy hello --runtime python3 --dir examples/python-hello --set GREETING=Hello
echo
echo "\$ legion invoke hello --path '/?name=Legion'"
"$BUILD/legion" invoke hello --path '/?name=Legion'
echo
image=$(mktemp /tmp/legion-busybox.XXXXXX.tar)
/usr/bin/python3 scripts/busybox-image.py "$image" legion.local/busybox:1
"$BUILD/legion" image import "$image"
rm -f "$image"
"$BUILD/legion" app deploy web --image legion.local/busybox:1 --port 8080 --auth none \
        --command /bin/sh --arg -c \
        --arg 'mkdir -p /tmp/www && echo "hello from a Legion container app" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'
echo
echo "\$ curl $LEGION_API/fn/default/web/"
curl -fsS "$LEGION_API/fn/default/web/"
echo
"$BUILD/legion" pod apply -f examples/pods/hello.yaml
echo
echo "\$ legion submit --name wordcount --num-executors 2 --file examples/jobs/wordcount.py --files examples/jobs/data"
"$BUILD/legion" job delete wordcount >/dev/null 2>&1 || true
"$BUILD/legion" submit --name wordcount --num-executors 2 --file examples/jobs/wordcount.py --files examples/jobs/data
echo
cat <<MSG

legiond is running on $LEGION_API (state in $LEGION_HOME). Try:

  $BUILD/legion app list
  $BUILD/legion invoke hello --data '{"name": "you"}'
  curl -H "Authorization: Bearer \$(cat $LEGION_HOME/admin.token)" $LEGION_API/fn/default/hello/?name=curl
  $BUILD/legion app deploy mine --runtime node --dir examples/node-hello
  curl $LEGION_API/fn/default/web/                     (a public container app: no token)
  $BUILD/legion pool create web --image legion.local/busybox:1 --ready 2
  $BUILD/legion app logs hello --follow
  $BUILD/legion pod list
  $BUILD/legion pod logs hello -c client --tail 3
  $BUILD/legion job show wordcount                      (a Dask job: roles, usage per second)
  $BUILD/legion job logs wordcount --role executor --index 0
  $BUILD/legion kubeconfig > ~/.kube/config && kubectl get pods   (legion kubeconfig uses LEGION_HOME=$LEGION_HOME)

Ctrl-C stops legiond; its workloads keep running for the next one
(stop them with: $BUILD/legiond --home $LEGION_HOME --stop-all).
MSG
wait $pid
