class A:
    x = 'ÿ'
