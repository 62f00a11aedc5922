from sentinel_exp.cli.app import main

main()
