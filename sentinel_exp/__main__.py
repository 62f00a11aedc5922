from sentinel_exp.app import main

main()
