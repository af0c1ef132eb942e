from liangxin_batch.cli import main

main(prog_name="liangxin-batch")
