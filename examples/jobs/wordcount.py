"""A Dask job for `legion submit`: counts the words of the text files
uploaded with --files (they are under /job/data) on the job's executors,
and sums a dask.array, printing both results.

    legion submit --num-executors 2 --file examples/jobs/wordcount.py \
        --files examples/jobs/data
"""
import glob
import os

import dask.array as da
import dask.bag as db
from distributed import Client

client = Client()  # the job's master: DASK_SCHEDULER_ADDRESS, set by Legion
workers = len(client.scheduler_info()["workers"])
print(f"{workers} executors, scheduler {os.environ['DASK_SCHEDULER_ADDRESS']}")

files = sorted(glob.glob("/job/data/*.txt"))
counts = (db.read_text(files).str.lower().str.split().flatten().frequencies()
          .topk(5, key=lambda kv: kv[1]).compute())
for word, n in counts:
    print(f"{word:>10} {n}")

x = da.arange(10_000_000, chunks=1_000_000)
print("sum of 0..9999999 =", int(x.sum().compute()))
