from actlab.cli import main

main()
