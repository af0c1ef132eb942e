"""Running a batch: the client (all HTTP to LiangXin and both limiters), the rate
limiter, the runner (submission, polling, recovery), downloads and their verification,
callbacks (receiver and link), progress, and `run_batch_async`, which wires them."""
