from rdist.cli import main

main(prog_name="rdist")
