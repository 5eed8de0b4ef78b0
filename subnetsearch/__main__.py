from subnetsearch.cli import main

main()
